/* C reference for bench/bench_dirty.py: runs a flat real-mode guest image (the doorbell guest,
 * its parameters already patched in) on raw KVM, with the same layout as kvmshim's Machine
 * (loaded at GPA 0x1000, CS=DS=SS=0, IP=0x1000, SP=0x8000), until the guest writes the
 * debug-exit port 0x501.
 *
 *   doorbell IMAGE ADDR MODE     MODE: pio-eventfd, mmio-eventfd, pio-exit or mmio-exit
 *
 * With an *-eventfd mode a KVM_IOEVENTFD (4 bytes, no datamatch) on ADDR absorbs the
 * guest's writes; with *-exit every write to ADDR exits here and is dropped. Prints
 * "seconds=S exits=E signals=N". */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define RAM_SIZE (16u << 20)
#define DEBUG_EXIT 0x501

static void die(const char *what) { perror(what); exit(2); }

static int xioctl(int fd, unsigned long req, void *arg, const char *what) {
    int ret = ioctl(fd, req, arg);
    if (ret < 0) die(what);
    return ret;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s IMAGE ADDR MODE\n", argv[0]); return 2; }
    unsigned long addr = strtoul(argv[2], NULL, 0);
    int pio = strncmp(argv[3], "pio", 3) == 0, use_eventfd = strstr(argv[3], "eventfd") != NULL;

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("/dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    unsigned char *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED) die("mmap ram");
    FILE *image = fopen(argv[1], "rb");
    if (!image) die(argv[1]);
    fread(ram + 0x1000, 1, 0x7000, image);
    fclose(image);
    struct kvm_userspace_memory_region slot = {.slot = 0, .guest_phys_addr = 0, .memory_size = RAM_SIZE,
                                               .userspace_addr = (unsigned long)ram};
    xioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot, "KVM_SET_USER_MEMORY_REGION");
    if (!pio) {  /* an MMIO doorbell needs a hole in the RAM: delete the slot, add RAM below and above */
        slot.memory_size = 0;
        xioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot, "delete slot");
        slot.memory_size = addr & ~0xfffUL;
        xioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot, "low slot");
        struct kvm_userspace_memory_region high = {.slot = 1, .guest_phys_addr = (addr & ~0xfffUL) + 0x1000,
            .memory_size = RAM_SIZE - ((addr & ~0xfffUL) + 0x1000),
            .userspace_addr = (unsigned long)ram + (addr & ~0xfffUL) + 0x1000};
        xioctl(vm, KVM_SET_USER_MEMORY_REGION, &high, "high slot");
    }
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (use_eventfd) {
        struct kvm_ioeventfd io = {.addr = addr, .len = 4, .fd = efd, .flags = pio ? KVM_IOEVENTFD_FLAG_PIO : 0};
        xioctl(vm, KVM_IOEVENTFD, &io, "KVM_IOEVENTFD");
    }
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) die("KVM_CREATE_VCPU");
    int mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) die("mmap kvm_run");
    struct kvm_sregs sregs;
    xioctl(vcpu, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
    struct kvm_segment *segs[] = {&sregs.cs, &sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss};
    for (int i = 0; i < 6; i++) {
        segs[i]->selector = 0; segs[i]->base = 0; segs[i]->limit = 0xffff;
        segs[i]->present = 1; segs[i]->s = 1; segs[i]->type = i == 0 ? 0xb : 0x3;
        segs[i]->dpl = segs[i]->db = segs[i]->l = segs[i]->g = segs[i]->avl = segs[i]->unusable = 0;
    }
    sregs.cr0 &= ~1UL;
    xioctl(vcpu, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
    struct kvm_regs regs = {.rip = 0x1000, .rsp = 0x8000, .rflags = 2};
    xioctl(vcpu, KVM_SET_REGS, &regs, "KVM_SET_REGS");

    struct timespec t0, t1;
    unsigned long exits = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
        exits++;
        if (run->exit_reason == KVM_EXIT_IO && run->io.port == DEBUG_EXIT) break;
        if (run->exit_reason == KVM_EXIT_HLT) break;
        if (run->exit_reason != KVM_EXIT_IO && run->exit_reason != KVM_EXIT_MMIO) {
            fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    unsigned long long signals = 0;
    if (read(efd, &signals, sizeof signals) < 0) signals = 0;
    printf("seconds=%.6f exits=%lu signals=%llu\n",
           (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, exits, signals);
    return 0;
}
