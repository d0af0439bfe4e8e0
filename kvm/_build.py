"""cffi API-mode builder: compiles against the system's linux/kvm.h at install time.

Every ioctl number, constant and struct layout used by kvm/ is declared here with
``...`` so that the C compiler, not a hand-copied number, supplies its value.
Anonymous structs nested in ``struct kvm_run`` get a C name through ``__typeof__``
typedefs (cffi cannot complete a partial struct that has no C name).
"""
from cffi import FFI

IOCTLS = """
    GET_API_VERSION CHECK_EXTENSION GET_VCPU_MMAP_SIZE CREATE_VM
    CREATE_VCPU SET_USER_MEMORY_REGION IOEVENTFD ENABLE_CAP
    REGISTER_COALESCED_MMIO UNREGISTER_COALESCED_MMIO
    GET_DIRTY_LOG CLEAR_DIRTY_LOG RESET_DIRTY_RINGS
    CREATE_IRQCHIP CREATE_PIT2 SET_TSS_ADDR SET_IDENTITY_MAP_ADDR IRQ_LINE
    RUN GET_REGS SET_REGS GET_SREGS SET_SREGS
"""
EXITS = """
    UNKNOWN EXCEPTION IO HYPERCALL DEBUG HLT MMIO IRQ_WINDOW_OPEN SHUTDOWN
    FAIL_ENTRY INTR SET_TPR TPR_ACCESS NMI INTERNAL_ERROR WATCHDOG
    SYSTEM_EVENT IOAPIC_EOI HYPERV X86_RDMSR X86_WRMSR DIRTY_RING_FULL
    AP_RESET_HOLD X86_BUS_LOCK XEN NOTIFY IO_IN IO_OUT
"""
CAPS = """
    NR_MEMSLOTS READONLY_MEM USER_MEMORY IOEVENTFD IOEVENTFD_ANY_LENGTH
    IOEVENTFD_NO_LENGTH IRQFD IRQCHIP PIT2 SET_TSS_ADDR SET_IDENTITY_MAP_ADDR
    COALESCED_MMIO COALESCED_PIO MANUAL_DIRTY_LOG_PROTECT2 DIRTY_LOG_RING
    DIRTY_LOG_RING_ACQ_REL MULTI_ADDRESS_SPACE SYNC_REGS IMMEDIATE_EXIT
    NR_VCPUS MAX_VCPUS MAX_VCPU_ID CHECK_EXTENSION_VM EXT_CPUID
    X86_DISABLE_EXITS INTERNAL_ERROR_DATA USER_NMI SET_GUEST_DEBUG
"""
OTHER_CONSTANTS = """
    KVM_API_VERSION KVM_MEM_LOG_DIRTY_PAGES KVM_MEM_READONLY
    KVM_IOEVENTFD_FLAG_DATAMATCH KVM_IOEVENTFD_FLAG_PIO KVM_IOEVENTFD_FLAG_DEASSIGN
    KVM_SYNC_X86_REGS KVM_SYNC_X86_SREGS KVM_SYNC_X86_EVENTS
    KVM_COALESCED_MMIO_PAGE_OFFSET KVM_DIRTY_LOG_PAGE_OFFSET
    KVM_DIRTY_GFN_F_DIRTY KVM_DIRTY_GFN_F_RESET
    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE KVM_DIRTY_LOG_INITIALLY_SET
    KVM_PIT_SPEAKER_DUMMY PROT_READ PROT_WRITE MAP_SHARED
"""
# Anonymous member types of struct kvm_run, named for cffi.
RUN_MEMBERS = ("hw", "fail_entry", "ex", "io", "mmio", "internal", "system_event", "s")

CONSTANTS = (
    [f"KVM_{n}" for n in IOCTLS.split()]
    + [f"KVM_EXIT_{n}" for n in EXITS.split()]
    + [f"KVM_CAP_{n}" for n in CAPS.split()]
    + OTHER_CONSTANTS.split()
)

CDEF = "\n".join(f"#define {name} ..." for name in CONSTANTS) + """
typedef int... __u8;
typedef int... __u16;
typedef int... __u32;
typedef int... __s32;
typedef int... __u64;
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
struct kvm_dirty_log { __u32 slot; void *dirty_bitmap; ...; };
struct kvm_clear_dirty_log {
    __u32 slot; __u32 num_pages; __u64 first_page; void *dirty_bitmap; ...;
};
struct kvm_ioeventfd {
    __u64 datamatch; __u64 addr; __u32 len; __s32 fd; __u32 flags; ...;
};
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
struct kvm_sync_regs { struct kvm_regs regs; struct kvm_sregs sregs; ...; };

typedef struct { __u64 hardware_exit_reason; ...; } kvm_run_hw_t;
typedef struct { __u64 hardware_entry_failure_reason; __u32 cpu; ...; } kvm_run_fail_entry_t;
typedef struct { __u32 exception; __u32 error_code; ...; } kvm_run_ex_t;
typedef struct {
    __u8 direction; __u8 size; __u16 port; __u32 count; __u64 data_offset; ...;
} kvm_run_io_t;
typedef struct { __u64 phys_addr; __u8 data[...]; __u32 len; __u8 is_write; ...; } kvm_run_mmio_t;
typedef struct { __u32 suberror; __u32 ndata; __u64 data[...]; ...; } kvm_run_internal_t;
typedef struct { __u32 type; __u32 ndata; ...; } kvm_run_system_event_t;
typedef struct { struct kvm_sync_regs regs; ...; } kvm_run_s_t;

struct kvm_run {
    __u8 request_interrupt_window; __u8 immediate_exit;
    __u32 exit_reason; __u8 ready_for_interrupt_injection; __u8 if_flag;
    __u16 flags; __u64 cr8; __u64 apic_base;
    kvm_run_hw_t hw; kvm_run_fail_entry_t fail_entry; kvm_run_ex_t ex;
    kvm_run_io_t io; kvm_run_mmio_t mmio; kvm_run_internal_t internal;
    kvm_run_system_event_t system_event;
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

SOURCE = "#include <sys/ioctl.h>\n#include <sys/mman.h>\n#include <linux/kvm.h>\n" + "".join(
    f"typedef __typeof__(((struct kvm_run *)0)->{m}) kvm_run_{m}_t;\n" for m in RUN_MEMBERS
) + FAST_EXIT_SOURCE

ffibuilder = FFI()
ffibuilder.cdef(CDEF + FAST_EXIT_CDEF)
ffibuilder.set_source("kvm._kvm_cffi", SOURCE)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
