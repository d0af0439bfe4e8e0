/* Reference exit loop: the same guest image on raw KVM, exits handled in C.
 * usage: exit_loop GUEST.bin  -> prints "<exits> <seconds>" */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define RAM_SIZE (16 << 20)
#define LOAD_GPA 0x1000

static void die(const char *what) { perror(what); exit(1); }

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: %s GUEST.bin\n", argv[0]); return 2; }
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("/dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    unsigned char *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    FILE *f = fopen(argv[1], "rb");
    if (!f) die(argv[1]);
    fread(ram + LOAD_GPA, 1, 0x7000, f);
    fclose(f);
    /* Leave 0xd0000-0xd0fff unslotted, like the Python machine's MMIO test device. */
    struct kvm_userspace_memory_region lo = { .slot = 0, .guest_phys_addr = 0, .memory_size = 0xd0000,
                                              .userspace_addr = (unsigned long)ram };
    struct kvm_userspace_memory_region hi = { .slot = 1, .guest_phys_addr = 0xd1000, .memory_size = RAM_SIZE - 0xd1000,
                                              .userspace_addr = (unsigned long)ram + 0xd1000 };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &lo) < 0 || ioctl(vm, KVM_SET_USER_MEMORY_REGION, &hi) < 0)
        die("KVM_SET_USER_MEMORY_REGION");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    struct kvm_sregs sregs;
    ioctl(vcpu, KVM_GET_SREGS, &sregs);
    sregs.cs.base = 0; sregs.cs.selector = 0;
    sregs.ds = sregs.es = sregs.ss = sregs.cs;
    sregs.ds.type = sregs.es.type = sregs.ss.type = 3;
    ioctl(vcpu, KVM_SET_SREGS, &sregs);
    struct kvm_regs regs = { .rip = LOAD_GPA, .rsp = 0x8000, .rflags = 2 };
    ioctl(vcpu, KVM_SET_REGS, &regs);
    long exits = 0;
    volatile unsigned long sink = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
        exits++;
        if (run->exit_reason == KVM_EXIT_IO) {
            if (run->io.port == 0x501) break;
            sink += ((unsigned char *)run)[run->io.data_offset];
        } else if (run->exit_reason == KVM_EXIT_MMIO) {
            sink += run->mmio.data[0];
        } else {
            fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%ld %.6f\n", exits, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
