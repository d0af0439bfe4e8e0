"""cffi API-mode builder: compiles against the system's linux/kvm.h at install time.

Nothing here is a number. The names come from the header itself: the C
preprocessor (``cc -E -dM``) lists every macro it defines, a syntax-only probe keeps
those that are integer constants on this architecture (other arches' ioctls name
structs x86 lacks), and each is declared ``#define NAME ...`` so that the compiler
supplies its value. Structs are declared with ``...`` so that the compiler lays them
out. Anonymous structs and unions nested in a struct get a C name through
``__typeof__`` typedefs (cffi cannot complete a partial type that has no C name).

After compiling, ``write_generated`` (called by setup.py's build_ext) writes
``kvm/_header.py`` (typed enums, the ioctl names, what the header declares) and the
stub ``kvm/_kvm_cffi.pyi`` from the compiled module's values.
"""
from __future__ import annotations

import importlib.util
import keyword
import os
import re
import shlex
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import NamedTuple

from cffi import FFI

INCLUDES = "#include <sys/ioctl.h>\n#include <sys/mman.h>\n#include <linux/kvm.h>\n"


class EnumSpec(NamedTuple):
    """A generated enum: the macros named ``prefix + MEMBER``; ``flag`` keeps single bits only."""

    name: str
    prefix: str
    flag: bool = False
    only: tuple[str, ...] = ()  # members to keep, when the prefix also names other things
    #: drop ``NAME_X`` when ``NAME`` is a member: a value of one of its fields, not a member
    has_field_values: bool = False


ENUMS = (
    EnumSpec("Cap", "KVM_CAP_"),
    EnumSpec("ExitReason", "KVM_EXIT_", has_field_values=True),
    EnumSpec("IoDirection", "KVM_EXIT_IO_"),
    EnumSpec("MemFlag", "KVM_MEM_", flag=True),
    EnumSpec("IoeventfdFlag", "KVM_IOEVENTFD_FLAG_", flag=True),
    EnumSpec("IrqfdFlag", "KVM_IRQFD_FLAG_", flag=True),
    EnumSpec("SyncReg", "KVM_SYNC_X86_", flag=True),
    EnumSpec("DirtyGfnFlag", "KVM_DIRTY_GFN_F_", flag=True),
    EnumSpec("DirtyLogFlag", "KVM_DIRTY_LOG_", flag=True, only=("MANUAL_PROTECT_ENABLE", "INITIALLY_SET")),
    EnumSpec("X86Quirk", "KVM_X86_QUIRK_", flag=True),
    EnumSpec("MpState", "KVM_MP_STATE_"),
    EnumSpec("SystemEventType", "KVM_SYSTEM_EVENT_"),
    EnumSpec("InternalError", "KVM_INTERNAL_ERROR_", has_field_values=True),
    EnumSpec("IrqchipId", "KVM_IRQCHIP_", only=("PIC_MASTER", "PIC_SLAVE", "IOAPIC")),
    EnumSpec("IrqRoutingType", "KVM_IRQ_ROUTING_", only=("IRQCHIP", "MSI", "S390_ADAPTER", "HV_SINT",
                                                           "XEN_EVTCHN")),
    EnumSpec("VcpuEventValid", "KVM_VCPUEVENT_VALID_", flag=True),
    EnumSpec("ClockFlag", "KVM_CLOCK_", flag=True, only=("TSC_STABLE", "REALTIME", "HOST_TSC")),
)
#: Libc constants the binding uses besides the header's.
LIBC_CONSTANTS = ("PROT_READ", "PROT_WRITE", "MAP_SHARED")
#: Optional features: declared (and the methods using them available) only if the header has the ioctl.
OPTIONAL = {
    "KVM_SET_USER_MEMORY_REGION2": """
struct kvm_userspace_memory_region2 {
    __u32 slot; __u32 flags; __u64 guest_phys_addr; __u64 memory_size; __u64 userspace_addr;
    __u64 guest_memfd_offset; __u32 guest_memfd; ...;
};""",
    "KVM_CREATE_GUEST_MEMFD": "struct kvm_create_guest_memfd { __u64 size; __u64 flags; ...; };",
}
#: struct -> members whose anonymous type gets the C name ``<struct>_<member>_t``.
NESTED = {
    "kvm_run": ("hw", "fail_entry", "ex", "io", "debug", "mmio", "hypercall", "tpr_access",
                "internal", "system_event", "msr", "s"),
    "kvm_vcpu_events": ("exception", "interrupt", "nmi", "smi", "triple_fault"),
    "kvm_irqchip": ("chip",),
    "kvm_irq_routing_entry": ("u",),
}

STRUCTS = """
typedef int... __u8;
typedef int... __u16;
typedef int... __u32;
typedef int... __s32;
typedef int... __u64;
typedef int... __s64;
typedef int... off_t;

int ioctl(int fd, unsigned long request, ...);
void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);
int munmap(void *addr, size_t length);
static void *const MAP_FAILED;

struct kvm_userspace_memory_region {
    __u32 slot; __u32 flags; __u64 guest_phys_addr; __u64 memory_size;
    __u64 userspace_addr; ...;
};
struct kvm_irq_level { __u32 irq; __u32 level; ...; };
struct kvm_pit_config { __u32 flags; ...; };
struct kvm_reinject_control { __u8 pit_reinject; ...; };
struct kvm_dirty_log { __u32 slot; void *dirty_bitmap; ...; };
struct kvm_clear_dirty_log {
    __u32 slot; __u32 num_pages; __u64 first_page; void *dirty_bitmap; ...;
};
struct kvm_ioeventfd {
    __u64 datamatch; __u64 addr; __u32 len; __s32 fd; __u32 flags; ...;
};
struct kvm_irqfd { __u32 fd; __u32 gsi; __u32 flags; __u32 resamplefd; ...; };
struct kvm_enable_cap { __u32 cap; __u32 flags; __u64 args[...]; ...; };
struct kvm_coalesced_mmio_zone { __u64 addr; __u32 size; __u32 pio; ...; };
struct kvm_coalesced_mmio {
    __u64 phys_addr; __u32 len; __u32 pio; __u8 data[...]; ...;
};
struct kvm_coalesced_mmio_ring {
    __u32 first; __u32 last; struct kvm_coalesced_mmio coalesced_mmio[]; ...;
};
struct kvm_dirty_gfn { __u32 flags; __u32 slot; __u64 offset; ...; };

struct kvm_regs {
    __u64 rax; __u64 rbx; __u64 rcx; __u64 rdx; __u64 rsi; __u64 rdi;
    __u64 rsp; __u64 rbp; __u64 r8; __u64 r9; __u64 r10; __u64 r11;
    __u64 r12; __u64 r13; __u64 r14; __u64 r15; __u64 rip; __u64 rflags; ...;
};
struct kvm_segment {
    __u64 base; __u32 limit; __u16 selector; __u8 type; __u8 present;
    __u8 dpl; __u8 db; __u8 s; __u8 l; __u8 g; __u8 avl; __u8 unusable; ...;
};
struct kvm_dtable { __u64 base; __u16 limit; ...; };
struct kvm_sregs {
    struct kvm_segment cs; struct kvm_segment ds; struct kvm_segment es;
    struct kvm_segment fs; struct kvm_segment gs; struct kvm_segment ss;
    struct kvm_segment tr; struct kvm_segment ldt;
    struct kvm_dtable gdt; struct kvm_dtable idt;
    __u64 cr0; __u64 cr2; __u64 cr3; __u64 cr4; __u64 cr8; __u64 efer;
    __u64 apic_base; __u64 interrupt_bitmap[...]; ...;
};
struct kvm_sregs2 {
    struct kvm_segment cs; struct kvm_segment ds; struct kvm_segment es;
    struct kvm_segment fs; struct kvm_segment gs; struct kvm_segment ss;
    struct kvm_segment tr; struct kvm_segment ldt;
    struct kvm_dtable gdt; struct kvm_dtable idt;
    __u64 cr0; __u64 cr2; __u64 cr3; __u64 cr4; __u64 cr8; __u64 efer;
    __u64 apic_base; __u64 flags; __u64 pdptrs[...]; ...;
};
struct kvm_sync_regs { struct kvm_regs regs; struct kvm_sregs sregs; ...; };

struct kvm_msr_entry { __u32 index; __u64 data; ...; };
struct kvm_msrs { __u32 nmsrs; struct kvm_msr_entry entries[]; ...; };
struct kvm_msr_list { __u32 nmsrs; __u32 indices[]; ...; };
struct kvm_cpuid_entry2 {
    __u32 function; __u32 index; __u32 flags; __u32 eax; __u32 ebx; __u32 ecx; __u32 edx; ...;
};
struct kvm_cpuid2 { __u32 nent; struct kvm_cpuid_entry2 entries[]; ...; };

typedef struct { __u8 injected; __u8 nr; __u8 has_error_code; __u8 pending; __u32 error_code; ...; }
    kvm_vcpu_events_exception_t;
typedef struct { __u8 injected; __u8 nr; __u8 soft; __u8 shadow; ...; } kvm_vcpu_events_interrupt_t;
typedef struct { __u8 injected; __u8 pending; __u8 masked; ...; } kvm_vcpu_events_nmi_t;
typedef struct { __u8 smm; __u8 pending; __u8 smm_inside_nmi; __u8 latched_init; ...; }
    kvm_vcpu_events_smi_t;
typedef struct { __u8 pending; ...; } kvm_vcpu_events_triple_fault_t;
struct kvm_vcpu_events {
    kvm_vcpu_events_exception_t exception; kvm_vcpu_events_interrupt_t interrupt;
    kvm_vcpu_events_nmi_t nmi; __u32 sipi_vector; __u32 flags; kvm_vcpu_events_smi_t smi;
    kvm_vcpu_events_triple_fault_t triple_fault; __u8 exception_has_payload;
    __u64 exception_payload; ...;
};
struct kvm_fpu {
    __u8 fpr[...][16]; __u16 fcw; __u16 fsw; __u8 ftwx; __u16 last_opcode; __u64 last_ip;
    __u64 last_dp; __u8 xmm[...][16]; __u32 mxcsr; ...;
};
struct kvm_xsave { __u32 region[...]; ...; };
struct kvm_xcr { __u32 xcr; __u64 value; ...; };
struct kvm_xcrs { __u32 nr_xcrs; __u32 flags; struct kvm_xcr xcrs[...]; ...; };
struct kvm_lapic_state { char regs[...]; ...; };
struct kvm_mp_state { __u32 mp_state; ...; };
struct kvm_debugregs { __u64 db[...]; __u64 dr6; __u64 dr7; __u64 flags; ...; };
struct kvm_pic_state {
    __u8 last_irr; __u8 irr; __u8 imr; __u8 isr; __u8 priority_add; __u8 irq_base;
    __u8 read_reg_select; __u8 poll; __u8 special_mask; __u8 init_state; __u8 auto_eoi;
    __u8 rotate_on_auto_eoi; __u8 special_fully_nested_mode; __u8 init4; __u8 elcr;
    __u8 elcr_mask; ...;
};
typedef union { __u64 bits; ...; } kvm_ioapic_redirect_t;
struct kvm_ioapic_state {
    __u64 base_address; __u32 ioregsel; __u32 id; __u32 irr; kvm_ioapic_redirect_t redirtbl[...]; ...;
};
typedef union { struct kvm_pic_state pic; struct kvm_ioapic_state ioapic; ...; } kvm_irqchip_chip_t;
struct kvm_irqchip { __u32 chip_id; kvm_irqchip_chip_t chip; ...; };
struct kvm_pit_channel_state {
    __u32 count; __u16 latched_count; __u8 count_latched; __u8 status_latched; __u8 status;
    __u8 read_state; __u8 write_state; __u8 write_latch; __u8 rw_mode; __u8 mode; __u8 bcd;
    __u8 gate; __s64 count_load_time; ...;
};
struct kvm_pit_state2 { struct kvm_pit_channel_state channels[...]; __u32 flags; ...; };
struct kvm_clock_data { __u64 clock; __u32 flags; __u64 realtime; __u64 host_tsc; ...; };
struct kvm_irq_routing_irqchip { __u32 irqchip; __u32 pin; ...; };
struct kvm_irq_routing_msi { __u32 address_lo; __u32 address_hi; __u32 data; __u32 devid; ...; };
typedef union { struct kvm_irq_routing_irqchip irqchip; struct kvm_irq_routing_msi msi; ...; }
    kvm_irq_routing_entry_u_t;
struct kvm_irq_routing_entry { __u32 gsi; __u32 type; __u32 flags; kvm_irq_routing_entry_u_t u; ...; };
struct kvm_irq_routing { __u32 nr; __u32 flags; struct kvm_irq_routing_entry entries[]; ...; };
struct kvm_msi {
    __u32 address_lo; __u32 address_hi; __u32 data; __u32 flags; __u32 devid; ...;
};
struct kvm_device_attr { __u32 flags; __u32 group; __u64 attr; __u64 addr; ...; };
struct kvm_tpr_access_ctl { __u32 enabled; __u32 flags; ...; };
struct kvm_vapic_addr { __u64 vapic_addr; ...; };
struct kvm_msr_filter_range { __u32 flags; __u32 nmsrs; __u32 base; __u8 *bitmap; ...; };
struct kvm_msr_filter { __u32 flags; struct kvm_msr_filter_range ranges[...]; ...; };
struct kvm_signal_mask { __u32 len; __u8 sigset[]; ...; };

typedef struct { __u64 hardware_exit_reason; ...; } kvm_run_hw_t;
typedef struct { __u64 hardware_entry_failure_reason; __u32 cpu; ...; } kvm_run_fail_entry_t;
typedef struct { __u32 exception; __u32 error_code; ...; } kvm_run_ex_t;
typedef struct {
    __u8 direction; __u8 size; __u16 port; __u32 count; __u64 data_offset; ...;
} kvm_run_io_t;
struct kvm_debug_exit_arch { __u32 exception; __u64 pc; __u64 dr6; __u64 dr7; ...; };
typedef struct { struct kvm_debug_exit_arch arch; ...; } kvm_run_debug_t;
typedef struct { __u64 phys_addr; __u8 data[...]; __u32 len; __u8 is_write; ...; } kvm_run_mmio_t;
typedef struct { __u64 nr; __u64 args[...]; __u64 ret; __u32 longmode; ...; } kvm_run_hypercall_t;
typedef struct { __u64 rip; __u32 is_write; ...; } kvm_run_tpr_access_t;
typedef struct { __u32 suberror; __u32 ndata; __u64 data[...]; ...; } kvm_run_internal_t;
typedef struct { __u32 type; __u32 ndata; __u64 data[...]; ...; } kvm_run_system_event_t;
typedef struct { __u8 error; __u32 reason; __u32 index; __u64 data; ...; } kvm_run_msr_t;
typedef struct { struct kvm_sync_regs regs; ...; } kvm_run_s_t;

struct kvm_run {
    __u8 request_interrupt_window; __u8 immediate_exit;
    __u32 exit_reason; __u8 ready_for_interrupt_injection; __u8 if_flag;
    __u16 flags; __u64 cr8; __u64 apic_base;
    kvm_run_hw_t hw; kvm_run_fail_entry_t fail_entry; kvm_run_ex_t ex;
    kvm_run_io_t io; kvm_run_debug_t debug; kvm_run_mmio_t mmio; kvm_run_hypercall_t hypercall;
    kvm_run_tpr_access_t tpr_access; kvm_run_internal_t internal;
    kvm_run_system_event_t system_event; kvm_run_msr_t msr;
    __u64 kvm_valid_regs; __u64 kvm_dirty_regs; kvm_run_s_t s; ...;
};
"""

# The exit loop's C helper (kvm/fast_exit.py explains the encoding): one call per exit runs
# KVM_RUN after completing the previous exit's read, then decodes the exit into one integer.
FAST_EXIT_CDEF = """
#define KVMSHIM_EXIT_OTHER ...
#define KVMSHIM_EXIT_PIO_OUT ...
#define KVMSHIM_EXIT_PIO_IN ...
#define KVMSHIM_EXIT_MMIO_WRITE ...
#define KVMSHIM_EXIT_MMIO_READ ...
#define KVMSHIM_RUN_FAILED ...
#define KVMSHIM_RUN_STOPPED ...
struct kvmshim_run_ctx {
    int fd; int in_run; int stop; struct kvm_run *run; struct kvm_coalesced_mmio_ring *ring;
    unsigned int pending; __u64 value; ...;
};
unsigned long long kvmshim_run(struct kvmshim_run_ctx *ctx, unsigned long long value, int decode);
"""
FAST_EXIT_SOURCE = r"""
#include <errno.h>
#include <string.h>
#define KVMSHIM_EXIT_OTHER 0
#define KVMSHIM_EXIT_PIO_OUT 1
#define KVMSHIM_EXIT_PIO_IN 2
#define KVMSHIM_EXIT_MMIO_WRITE 3
#define KVMSHIM_EXIT_MMIO_READ 4
#define KVMSHIM_RUN_FAILED 0xff   /* the "exit reason" of an OTHER record when KVM_RUN failed */
#define KVMSHIM_RUN_STOPPED 0xfe  /* ... and when ctx->stop kept it from running */
#define KVMSHIM_PENDING_PIO 0x100
struct kvmshim_run_ctx {
    int fd;
    volatile int in_run;         /* 1 while this vCPU is inside KVM_RUN */
    volatile int stop;           /* set: do not enter KVM_RUN, return RUN_STOPPED */
    struct kvm_run *run;
    struct kvm_coalesced_mmio_ring *ring;  /* NULL unless the VM has a coalesced ring */
    unsigned int pending;        /* size (| KVMSHIM_PENDING_PIO) of a decoded read to complete */
    __u64 value;                 /* the data of a decoded MMIO write */
};

static unsigned long long kvmshim_run(struct kvmshim_run_ctx *c, unsigned long long value, int decode)
{
    struct kvm_run *run = c->run;
    if (c->pending) {
        unsigned int size = c->pending & 0xff;
        unsigned char *data = c->pending & KVMSHIM_PENDING_PIO ? (unsigned char *)run + run->io.data_offset
                                                               : run->mmio.data;
        memcpy(data, &value, size);  /* x86: the low bytes of value, little-endian */
        c->pending = 0;
    }
    if (c->stop)
        return (unsigned long long)KVMSHIM_RUN_STOPPED << 8;
    c->in_run = 1;
    int ret = ioctl(c->fd, KVM_RUN, 0);
    c->in_run = 0;
    if (ret < 0)
        return (unsigned long long)errno << 16 | KVMSHIM_RUN_FAILED << 8;
    unsigned int reason = run->exit_reason;
    if (!decode || (c->ring && c->ring->first != c->ring->last))
        return (unsigned long long)reason << 8;
    if (reason == KVM_EXIT_IO && run->io.count == 1 && run->io.size <= 4) {
        unsigned int size = run->io.size;
        unsigned long long head = (unsigned long long)size << 3 | (unsigned long long)run->io.port << 8;
        if (run->io.direction == KVM_EXIT_IO_IN) {
            c->pending = size | KVMSHIM_PENDING_PIO;
            return head | KVMSHIM_EXIT_PIO_IN;
        }
        __u32 out = 0;
        memcpy(&out, (unsigned char *)run + run->io.data_offset, size);
        return head | (unsigned long long)out << 32 | KVMSHIM_EXIT_PIO_OUT;
    }
    if (reason == KVM_EXIT_MMIO && run->mmio.len && run->mmio.len <= 8 && run->mmio.phys_addr < (1ULL << 52)) {
        unsigned int size = run->mmio.len;
        unsigned long long head = (unsigned long long)run->mmio.phys_addr << 12 | (unsigned long long)size << 3;
        if (!run->mmio.is_write) {
            c->pending = size;
            return head | KVMSHIM_EXIT_MMIO_READ;
        }
        c->value = 0;
        memcpy(&c->value, run->mmio.data, size);
        return head | KVMSHIM_EXIT_MMIO_WRITE;
    }
    return (unsigned long long)reason << 8;
}
"""


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


_MACRO = re.compile(r"#define (KVM_\w+) (.*)")  # object-like macros only: "NAME(" does not match


def header_macros() -> dict[str, str]:
    """Every object-like ``KVM_*`` macro of linux/kvm.h (name -> body), from the preprocessor."""
    listing = subprocess.run([*_compiler(), "-E", "-dM", "-x", "c", "-"], input=INCLUDES,
                             capture_output=True, text=True, check=True).stdout
    return {m[1]: m[2] for m in map(_MACRO.fullmatch, listing.splitlines()) if m}


def integer_macros(names: list[str]) -> list[str]:
    """Those of *names* that compile here as integer constants (a syntax-only probe, repeated
    without the lines the compiler rejected until it accepts them all)."""
    keep = sorted(names)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp, "probe.c")
        for _ in range(5):
            probe.write_text(INCLUDES + "".join(f"unsigned long long probe_{n} = ({n});\n" for n in keep))
            done = subprocess.run([*_compiler(), "-fsyntax-only", "-Werror", str(probe)],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                return keep
            bad = {int(line) - INCLUDES.count("\n") - 1
                   for line in re.findall(rf"{re.escape(str(probe))}:(\d+):\d+: error", done.stderr)}
            if not bad:
                raise RuntimeError(f"cannot probe linux/kvm.h macros:\n{done.stderr}")
            keep = [n for i, n in enumerate(keep) if i not in bad]
    raise RuntimeError("linux/kvm.h macro probe did not converge")


def _nested_typedefs() -> str:
    return "".join(f"typedef __typeof__(((struct {struct} *)0)->{member}) {struct}_{member}_t;\n"
                   for struct, members in NESTED.items() for member in members)


MACROS = header_macros()
CONSTANTS = integer_macros(list(MACROS))
IOCTLS = [n for n in CONSTANTS if re.match(r"_IO[RW]*\(", MACROS[n])]
CDEF = ("\n".join(f"#define {name} ..." for name in [*CONSTANTS, *LIBC_CONSTANTS]) + STRUCTS
        + "".join(decl for ioctl, decl in OPTIONAL.items() if ioctl in IOCTLS))
SOURCE = (INCLUDES + _nested_typedefs()
          + "typedef __typeof__(((struct kvm_ioapic_state *)0)->redirtbl[0]) kvm_ioapic_redirect_t;\n"
          + FAST_EXIT_SOURCE)

ffibuilder = FFI()
ffibuilder.cdef(CDEF + FAST_EXIT_CDEF)
ffibuilder.set_source("kvm._kvm_cffi", SOURCE)


# ----------------------------------------------------------------- generated files
def _members(spec: EnumSpec, values: dict[str, int]) -> dict[str, int]:
    """The enum's members (``KVM_EXIT_IO_IN`` is a value of a field of ``KVM_EXIT_IO``'s
    record, not an exit reason: ``has_field_values`` leaves it out)."""
    names = {n[len(spec.prefix):]: v for n, v in values.items() if n.startswith(spec.prefix)}
    if spec.only:
        names = {n: v for n, v in names.items() if n in spec.only}
    if spec.flag:
        names = {n: v for n, v in names.items() if v > 0 and v & (v - 1) == 0}
    if not spec.has_field_values:
        return names
    return {n: v for n, v in names.items() if not any(n.startswith(other + "_") for other in names)}


def _enum_source(spec: EnumSpec, values: dict[str, int]) -> str:
    base = "IntFlag" if spec.flag else "IntEnum"
    members = sorted(_members(spec, values).items(), key=lambda item: (item[1], item[0]))
    for name, _ in members:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise RuntimeError(f"{spec.prefix}{name}: not a Python identifier")
    body = "".join(f"    {name} = {value:#x}\n" if spec.flag else f"    {name} = {value}\n"
                   for name, value in members)
    return f"\n\nclass {spec.name}(enum.{base}):\n    \"\"\"``{spec.prefix}*`` of linux/kvm.h.\"\"\"\n\n{body}"


def generated_header(lib: object) -> str:
    """kvm/_header.py: the enums, ioctl names and optional features, from the compiled *lib*."""
    values = {n: getattr(lib, n) for n in CONSTANTS}
    have = "".join(f"HAVE_{ioctl[4:]}: bool = {ioctl in IOCTLS}\n" for ioctl in OPTIONAL)
    ioctls = "".join(f"    {name!r},\n" for name in IOCTLS)
    return ('"""Generated by kvm/_build.py from the compiled kvm._kvm_cffi (linux/kvm.h): do not edit."""\n'
            "from __future__ import annotations\n\nimport enum\n"
            + "".join(_enum_source(spec, values) for spec in ENUMS)
            + "\n\n#: Every ioctl linux/kvm.h defines for this architecture.\nIOCTL_NAMES: tuple[str, ...] = (\n"
            + ioctls + ")\n" + have)


def generated_stub(lib: object) -> str:
    """kvm/_kvm_cffi.pyi: every constant of *lib* as an int, its functions by signature."""
    fast_exit = re.findall(r"#define (KVMSHIM_\w+)", FAST_EXIT_CDEF)
    constants = "".join(f"    {n}: int\n" for n in [*CONSTANTS, *LIBC_CONSTANTS, *fast_exit])
    return ('"""Generated by kvm/_build.py from the compiled kvm._kvm_cffi: do not edit."""\n'
            "from typing import Any\n\nffi: Any\n\n\nclass _Lib:\n" + constants
            + "    MAP_FAILED: Any\n"
            "    def ioctl(self, fd: int, request: int, arg: Any = ..., /) -> int: ...\n"
            "    def mmap(self, addr: Any, length: int, prot: int, flags: int, fd: int, offset: int, /)"
            " -> Any: ...\n"
            "    def munmap(self, addr: Any, length: int, /) -> int: ...\n"
            "    def kvmshim_run(self, ctx: Any, value: int, decode: int, /) -> int: ...\n\n\nlib: _Lib\n")


def write_generated(extension_path: str) -> None:
    """Load the compiled extension at *extension_path* and write the generated files beside it."""
    spec = importlib.util.spec_from_file_location("kvm._kvm_cffi", extension_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    target = Path(extension_path).parent
    (target / "_header.py").write_text(generated_header(module.lib))
    (target / "_kvm_cffi.pyi").write_text(generated_stub(module.lib))


if __name__ == "__main__":
    write_generated(ffibuilder.compile(verbose=True))
