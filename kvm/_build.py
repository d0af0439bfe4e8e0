"""cffi API-mode builder: compiles against the system's linux/kvm.h at install time.

Every ioctl number, constant and struct layout used by kvm/ is declared here with
``...`` so that the C compiler, not a hand-copied number, supplies its value.
"""
from cffi import FFI

ffibuilder = FFI()

ffibuilder.cdef(
    """
    #define KVM_API_VERSION ...
    #define KVM_GET_API_VERSION ...
    int ioctl(int fd, unsigned long request, ...);
    """
)

ffibuilder.set_source(
    "kvm._kvm_cffi",
    """
    #include <sys/ioctl.h>
    #include <linux/kvm.h>
    """,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
