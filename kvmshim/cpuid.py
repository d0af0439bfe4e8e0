"""QEMU's ``qemu64`` CPU model as a KVM CPUID table, and ``-cpu`` option parsing.

``cpu_model_table(kvm.supported_cpuid(), "qemu64,+popcnt,-nx")`` builds the table QEMU 7.2
passes to KVM_SET_CPUID2 for ``-accel kvm -cpu qemu64`` in the leaves that define the
model: vendor (KVM's, i.e. the host's, as QEMU does under KVM), family/model/stepping,
the brand string, and the feature words of leaves 1, 7 and 0x80000001, each masked by
what KVM_GET_SUPPORTED_CPUID offers. Requested features KVM lacks are dropped and named
in ``CpuidTable.missing`` (QEMU warns "host doesn't support requested feature"). The cache
leaves (2, 4, 0x80000005-6) are QEMU's legacy cache model, and the topology fields (leaf 1's
logical count, leaf 4's core count and sharing, leaf 0xB, 0x80000008 ECX) follow ``-smp``'s
cores and threads per package, as QEMU encodes them.

The kernel cannot hide every bit: kvm_pvm shows the guest host bits outside the table
(XSAVE, AVX and others in leaf 1 ECX, see docs/kvm.md); ``KVM_GET_CPUID2`` after
``set_cpuid2`` shows what the guest really sees.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from kvm import CpuidEntry
from kvm.cpuid import SIGNIFICANT_INDEX

from .errors import KvmshimError


class CpuModelError(KvmshimError, ValueError):
    """An unknown CPU model or feature, or a malformed ``-cpu`` option."""


#: QEMU 7.2 feature names, bit by bit, of the main feature words (leaf, subleaf, register).
FEATURE_WORDS: dict[tuple[int, int, str], tuple[str | None, ...]] = {
    (1, 0, "edx"): (
        "fpu", "vme", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", None, "sep", "mtrr", "pge",
        "mca", "cmov", "pat", "pse36", "pn", "clflush", None, "ds", "acpi", "mmx", "fxsr", "sse", "sse2",
        "ss", "ht", "tm", "ia64", "pbe"),
    (1, 0, "ecx"): (
        "pni", "pclmulqdq", "dtes64", "monitor", "ds-cpl", "vmx", "smx", "est", "tm2", "ssse3", "cid",
        None, "fma", "cx16", "xtpr", "pdcm", None, "pcid", "dca", "sse4.1", "sse4.2", "x2apic", "movbe",
        "popcnt", "tsc-deadline", "aes", "xsave", None, "avx", "f16c", "rdrand", "hypervisor"),
    (7, 0, "ebx"): (
        "fsgsbase", "tsc-adjust", "sgx", "bmi1", "hle", "avx2", None, "smep", "bmi2", "erms", "invpcid",
        "rtm", None, None, "mpx", None, "avx512f", "avx512dq", "rdseed", "adx", "smap", "avx512ifma",
        "pcommit", "clflushopt", "clwb", "intel-pt", "avx512pf", "avx512er", "avx512cd", "sha-ni",
        "avx512bw", "avx512vl"),
    (7, 0, "ecx"): (
        None, "avx512vbmi", "umip", "pku", None, "waitpkg", "avx512vbmi2", None, "gfni", "vaes",
        "vpclmulqdq", "avx512vnni", "avx512bitalg", None, "avx512-vpopcntdq", None, "la57", None, None,
        None, None, None, "rdpid", None, "bus-lock-detect", "cldemote", None, "movdiri", "movdir64b",
        None, "sgxlc", "pks"),
    (0x80000001, 0, "edx"): (
        None, None, None, None, None, None, None, None, None, None, None, "syscall", None, None, None,
        None, None, None, None, None, "nx", None, "mmxext", None, None, "fxsr-opt", "pdpe1gb", "rdtscp",
        None, "lm", "3dnowext", "3dnow"),
    (0x80000001, 0, "ecx"): (
        "lahf-lm", "cmp-legacy", "svm", "extapic", "cr8legacy", "abm", "sse4a", "misalignsse",
        "3dnowprefetch", "osvw", "ibs", "xop", "skinit", "wdt", None, "lwp", "fma4", "tce", None,
        "nodeid-msr", None, "tbm", "topoext", "perfctr-core", "perfctr-nb", None, None, None, None,
        None, None, None),
}
#: QEMU's alternative spellings (after ``_`` -> ``-``, as QEMU's feat2prop does).
ALIASES = {"sse3": "pni", "pclmuldq": "pclmulqdq", "sse4-1": "sse4.1", "sse4-2": "sse4.2", "xd": "nx",
           "ffxsr": "fxsr-opt", "i64": "lm"}
FEATURES: dict[str, tuple[tuple[int, int, str], int]] = {
    name: (word, bit) for word, names in FEATURE_WORDS.items() for bit, name in enumerate(names) if name}
#: KVM's paravirtual features QEMU enables by default (kvmclock, nopiodelay, clocksource2,
#: async-pf, steal-time, pv-eoi, clocksource-stable-bit: KVM_FEATURE_* bits of leaf 0x40000001).
KVM_PV_FEATURES = 1 << 0 | 1 << 1 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 24
KVM_SIGNATURE = b"KVMKVMKVM\0\0\0"


@dataclass(frozen=True)
class CpuModel:
    """A named model: what QEMU's X86CPUDefinition gives, plus the accelerator's defaults."""

    name: str
    level: int
    xlevel: int
    family: int
    model: int
    stepping: int
    model_id: str
    features: frozenset[str]
    phys_bits: int = 40
    virt_bits: int = 48


#: QEMU 7.2 ``qemu64`` (target/i386/cpu.c) with ``-accel kvm``'s defaults applied
#: (kvm_default_props: x2apic on, svm/monitor/acpi off; the hypervisor bit).
QEMU64 = CpuModel(
    "qemu64", level=0xD, xlevel=0x8000000A, family=15, model=107, stepping=1,
    model_id="QEMU Virtual CPU version 2.5+",
    features=frozenset({
        "fpu", "de", "pse", "tsc", "msr", "mce", "cx8", "pge", "cmov", "pat", "fxsr", "mmx", "sse",
        "sse2", "pae", "sep", "apic", "mtrr", "clflush", "mca", "pse36",  # PPRO_FEATURES + 4
        "pni", "cx16", "syscall", "nx", "lm", "lahf-lm",
        "x2apic", "hypervisor"}))
MODELS = {model.name: model for model in (QEMU64,)}
#: QEMU's ``host`` and ``max`` under KVM: the table KVM_GET_SUPPORTED_CPUID offers, as it is.
PASSTHROUGH_MODELS = ("host", "max")


@dataclass
class CpuidTable:
    """The entries for ``Vcpu.set_cpuid2`` and the requested features KVM does not offer."""

    entries: list[CpuidEntry]
    missing: list[str] = field(default_factory=list)

    def entry(self, function: int, index: int = 0) -> CpuidEntry:
        return next(e for e in self.entries if (e.function, e.index) == (function, index))

    def warnings(self) -> list[str]:
        """QEMU's wording: ``host doesn't support requested feature: CPUID.01H:ECX.pni [bit 0]``."""
        out = []
        for name in self.missing:
            (leaf, sub, reg), bit = FEATURES[name]
            where = f"CPUID.{leaf:02X}H" if leaf < 0x80000000 else f"CPUID.{leaf:08X}H"
            where += f".{sub:X}" if leaf == 7 else ""
            out.append(f"host doesn't support requested feature: {where}:{reg.upper()}.{name} [bit {bit}]")
        return out


def feature_name(name: str) -> str:
    """The canonical QEMU name of *name*; CpuModelError if QEMU has no such feature."""
    canonical = name.replace("_", "-")
    canonical = ALIASES.get(canonical, canonical)
    if canonical not in FEATURES:
        raise CpuModelError(f"unknown CPU feature {name!r} (QEMU 7.2's names for leaves 1, 7 and "
                            "0x80000001, e.g. 'popcnt', 'sse4.2', 'nx')")
    return canonical


@dataclass(frozen=True)
class CpuOption:
    """A parsed ``-cpu``: the model (None for ``host``/``max``), features on and off, and the
    properties that are not features (``vendor``, ``model-id``, ``phys-bits``, ``host-phys-bits``)."""

    model: CpuModel | None
    features: frozenset[str]
    removed: frozenset[str]
    vendor: str | None = None
    model_id: str | None = None
    phys_bits: int | None = None
    host_phys_bits: bool = False


def _property(option: CpuOption, key: str, value: str) -> CpuOption | None:
    """*option* with property *key* set, or None when *key* names a feature; QEMU's checks."""
    if key == "vendor":
        if len(value.encode()) != 12:
            raise CpuModelError(f"-cpu vendor={value}: a vendor is 12 characters, e.g. GenuineIntel")
        return replace(option, vendor=value)
    if key == "model-id":
        return replace(option, model_id=value[:48])
    if key == "phys-bits":
        if not value.isdigit() or not 32 <= int(value) <= 52:  # TARGET_PHYS_ADDR_SPACE_BITS
            raise CpuModelError(f"-cpu phys-bits={value}: phys-bits is a number from 32 to 52")
        return replace(option, phys_bits=int(value))
    if key == "host-phys-bits":
        if value not in ("on", "off"):
            raise CpuModelError(f"-cpu host-phys-bits={value}: expected 'on' or 'off'")
        return replace(option, host_phys_bits=value == "on")
    return None


def parse_cpu_option(option: str) -> CpuOption:
    """``MODEL,+feat,-feat,feat[=on|off],prop=value``. As in QEMU, ``feat`` alone means ``feat=on``;
    ``feat=on|off`` apply first, then every ``+feat``, then every ``-feat`` (``-`` wins over ``+``).
    The model is None for ``host`` and ``max``: every feature KVM offers, QEMU's meaning under KVM."""
    name, *items = option.split(",")
    if name not in MODELS and name not in PASSTHROUGH_MODELS:
        known = ", ".join((*MODELS, *PASSTHROUGH_MODELS))
        raise CpuModelError(f"unable to find CPU model {name!r} (known: {known})")
    model = MODELS.get(name)
    parsed = CpuOption(model, frozenset(), frozenset())
    on: set[str] = set(model.features if model else ())
    off: set[str] = set()
    plus: set[str] = set()
    minus: set[str] = set()
    for item in filter(None, items):
        if item[0] in "+-":
            (plus if item[0] == "+" else minus).add(feature_name(item[1:]))
            continue
        key, _, value = item.partition("=")
        key = key.replace("_", "-")
        with_property = _property(parsed, key, value or "on")
        if with_property is not None:
            parsed = with_property
            continue
        if value not in ("", "on", "off"):
            raise CpuModelError(f"-cpu {item!r}: a feature is 'on' or 'off', not {value!r}")
        feature = feature_name(key)
        (off if value == "off" else on).add(feature)
        (on if value == "off" else off).discard(feature)
    return replace(parsed, features=frozenset((on | plus) - minus), removed=frozenset((off - plus) | minus))


def _word(features: frozenset[str], word: tuple[int, int, str]) -> int:
    return sum(1 << bit for bit, name in enumerate(FEATURE_WORDS[word]) if name in features)


def _regs(text: bytes) -> dict[str, int]:
    """Four little-endian registers eax, ebx, ecx, edx from 16 bytes."""
    return {reg: int.from_bytes(text[i * 4:i * 4 + 4], "little") for i, reg in enumerate(("eax", "ebx", "ecx", "edx"))}


@dataclass(frozen=True)
class Topology:
    """One package as ``-smp`` describes it: cores, and threads per core (dies are 1 here)."""

    cores: int = 1
    threads: int = 1

    @property
    def logical(self) -> int:
        return self.cores * self.threads

    @property
    def core_offset(self) -> int:
        """APIC ID bits below the core number (QEMU's apicid_core_offset)."""
        return (self.threads - 1).bit_length()

    @property
    def package_offset(self) -> int:
        """APIC ID bits below the package number (QEMU's apicid_pkg_offset)."""
        return self.core_offset + (self.cores - 1).bit_length()


#: QEMU's legacy cache model (legacy_l1d_cache ... legacy_l3_cache) as leaf 4's EAX low bits (type,
#: level, self-initializing), EBX, ECX and EDX, and who shares each: a thread, a core, a package.
_CACHES = ((0x121, 0x01C0003F, 0x3F, 1, "thread"), (0x122, 0x01C0003F, 0x3F, 1, "thread"),
           (0x143, 0x03C0003F, 0xFFF, 1, "core"), (0x163, 0x03C0003F, 0x3FFF, 6, "package"))
#: Leaf 2's descriptors and leaves 0x80000005-6 (AMD's L1 and L2/L3 words) of the same model.
_LEAF_2 = {"eax": 1, "ebx": 0, "ecx": 0x4D, "edx": 0x2C307D}
_AMD_L1 = {"eax": 0x01FF01FF, "ebx": 0x01FF01FF, "ecx": 0x40020140, "edx": 0x40020140}
_AMD_L2 = {"eax": 0, "ebx": 0x42004200, "ecx": 0x02008140, "edx": 0x00808140}


def _topology_leaves(topology: Topology, apic_id: int) -> list[CpuidEntry]:
    """Leaves 4 (one subleaf per cache, then the null one) and 0xB (SMT, core, invalid); each count
    is cut to its field's width, as a package larger than the fields can say has it cut."""
    sharing = {"thread": 1, "core": topology.threads, "package": 1 << topology.package_offset}
    cores = (topology.cores - 1) & 0x3F
    leaf4 = [CpuidEntry(4, n, SIGNIFICANT_INDEX, eax=low | ((sharing[who] - 1) & 0xFFF) << 14 | cores << 26,
                        ebx=ebx, ecx=ecx, edx=edx) for n, (low, ebx, ecx, edx, who) in enumerate(_CACHES)]
    leaf4.append(CpuidEntry(4, len(_CACHES), SIGNIFICANT_INDEX))
    leaf_b = [CpuidEntry(0xB, 0, SIGNIFICANT_INDEX, eax=topology.core_offset, ebx=topology.threads & 0xFFFF,
                         ecx=0x100, edx=apic_id),
              CpuidEntry(0xB, 1, SIGNIFICANT_INDEX, eax=topology.package_offset, ebx=topology.logical & 0xFFFF,
                         ecx=0x201, edx=apic_id),
              CpuidEntry(0xB, 2, SIGNIFICANT_INDEX, ecx=2, edx=apic_id)]
    return leaf4 + leaf_b


def cpu_model_table(supported: list[CpuidEntry], option: str = "qemu64", vcpu_index: int = 0,
                    topology: Topology = Topology()) -> CpuidTable:
    """The CPUID table of the model *option* on top of KVM's *supported* table, for the vCPU whose
    APIC ID is *vcpu_index* in packages of *topology*."""
    parsed = parse_cpu_option(option)
    model, features = parsed.model, parsed.features
    if model is None:
        return _passthrough(supported, parsed, vcpu_index)
    offered = {(e.function, e.index): e for e in supported}
    signature = _vendor(parsed, offered[(0, 0)])
    host_bits = offered.get((0x80000008, 0), CpuidEntry(0x80000008)).eax & 0xFF
    phys_bits = parsed.phys_bits or (parsed.host_phys_bits and host_bits) or model.phys_bits
    version = (model.stepping | (model.model & 0xF) << 4 | min(model.family, 0xF) << 8
               | (model.model >> 4) << 16 | max(model.family - 0xF, 0) << 20)
    missing: list[str] = []

    def masked(function: int, index: int, **regs: int) -> dict[str, int]:
        """*regs* feature words limited to what KVM offers; dropped names go to *missing*."""
        have = offered.get((function, index), CpuidEntry(function, index))
        out = {}
        for reg, bits in regs.items():
            allowed = getattr(have, reg)
            names = FEATURE_WORDS[(function, index, reg)]
            missing.extend(n for bit, n in enumerate(names) if n and bits >> bit & 1 and not allowed >> bit & 1)
            out[reg] = bits & allowed
        return out

    def words(function: int, index: int) -> dict[str, int]:
        return {reg: _word(features, (f, i, reg)) for (f, i, reg) in FEATURE_WORDS if (f, i) == (function, index)}

    brand = _brand(parsed.model_id or model.model_id)
    leaf1 = masked(1, 0, **words(1, 0))
    logical = topology.logical & 0xFF if topology.logical > 1 else 0  # more than one: the count and HTT
    if topology.logical > 1:
        leaf1["edx"] |= 1 << 28
    kvm_leaf = offered.get((0x40000001, 0), CpuidEntry(0x40000001))
    kvm_signature = _regs(bytes(4) + KVM_SIGNATURE)
    entries = [
        CpuidEntry(0x40000000, eax=0x40000001, ebx=kvm_signature["ebx"], ecx=kvm_signature["ecx"],
                   edx=kvm_signature["edx"]),
        CpuidEntry(0x40000001, eax=kvm_leaf.eax & KVM_PV_FEATURES),
        CpuidEntry(0, eax=model.level, **signature),
        CpuidEntry(1, eax=version, ebx=(vcpu_index & 0xFF) << 24 | logical << 16 | 8 << 8, **leaf1),
        CpuidEntry(2, **_LEAF_2),
        *_topology_leaves(topology, vcpu_index),
        CpuidEntry(7, 0, SIGNIFICANT_INDEX, eax=0, **masked(7, 0, **words(7, 0)), edx=0),
        CpuidEntry(0x80000000, eax=model.xlevel, **signature),
        CpuidEntry(0x80000001, eax=version, **masked(0x80000001, 0, **words(0x80000001, 0))),
        *(CpuidEntry(0x80000002 + n, **brand[n]) for n in range(3)),
        CpuidEntry(0x80000005, **_AMD_L1),
        CpuidEntry(0x80000006, **_AMD_L2),
        CpuidEntry(0x80000008, eax=model.virt_bits << 8 | phys_bits,
                   ecx=(topology.package_offset & 0xF) << 12 | (topology.logical - 1) & 0xFF),
    ]
    return CpuidTable(entries, missing)


def _vendor(parsed: CpuOption, host: CpuidEntry) -> dict[str, int]:
    """Leaf 0's EBX, EDX, ECX: ``vendor=`` or, as QEMU under KVM, the host's."""
    if parsed.vendor is None:
        return {"ebx": host.ebx, "ecx": host.ecx, "edx": host.edx}
    regs = _regs(bytes(4) + parsed.vendor.encode())  # the string's order is EBX, EDX, ECX
    return {"ebx": regs["ebx"], "edx": regs["ecx"], "ecx": regs["edx"]}


def _brand(model_id: str) -> list[dict[str, int]]:
    """Leaves 0x80000002-4: the brand string, NUL-padded to 48 bytes."""
    text = model_id.encode().ljust(48, b"\0")
    return [_regs(text[16 * n:16 * n + 16]) for n in range(3)]


def _passthrough(supported: list[CpuidEntry], parsed: CpuOption, vcpu_index: int) -> CpuidTable:
    """``-cpu host``/``max``: KVM's supported table with this vCPU's APIC ID (leaf 1 EBX, the x2APIC
    ID of leaves 0xb and 0x1f), less the features turned off, with the ``vendor``, ``model-id`` and
    ``phys-bits`` asked for (``host-phys-bits`` is these models' default); features turned on that
    KVM does not offer are the missing ones."""
    offered = {(e.function, e.index): e for e in supported}
    missing = []
    for name in sorted(parsed.features):
        (function, index, reg), bit = FEATURES[name]
        if not getattr(offered.get((function, index), CpuidEntry(function, index)), reg) >> bit & 1:
            missing.append(name)
    cleared: dict[tuple[int, int, str], int] = {}
    for name in parsed.removed:
        word, bit = FEATURES[name]
        cleared[word] = cleared.get(word, 0) | 1 << bit
    entries = []
    for e in supported:
        regs = {reg: getattr(e, reg) & ~cleared.get((e.function, e.index, reg), 0)
                for reg in ("eax", "ebx", "ecx", "edx")}
        if e.function == 1:
            regs["ebx"] = regs["ebx"] & 0x00FFFFFF | (vcpu_index & 0xFF) << 24
        elif e.function in (0xB, 0x1F):
            regs["edx"] = vcpu_index
        elif e.function in (0, 0x80000000) and parsed.vendor:
            regs.update(_vendor(parsed, e))
        elif 0x80000002 <= e.function <= 0x80000004 and parsed.model_id is not None:
            regs.update(_brand(parsed.model_id)[e.function - 0x80000002])
        elif e.function == 0x80000008 and parsed.phys_bits:
            regs["eax"] = regs["eax"] & ~0xFF | parsed.phys_bits
        entries.append(CpuidEntry(e.function, e.index, e.flags, **regs))
    return CpuidTable(entries, missing)


__all__ = ["ALIASES", "FEATURES", "FEATURE_WORDS", "MODELS", "PASSTHROUGH_MODELS", "QEMU64", "CpuModel",
           "CpuModelError", "CpuOption", "CpuidTable", "Topology", "cpu_model_table", "feature_name",
           "parse_cpu_option"]
