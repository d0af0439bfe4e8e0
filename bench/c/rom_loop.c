/* Reference exit loop for a 64 KiB ROM entered from the reset vector (bench/guest_src/exit_rom.S),
 * on raw KVM: the ROM read-only at 0xffff0000 and 0xf0000, RAM below with 0xd0000-0xd0fff left
 * unslotted (MMIO exits there), exits handled in C until an OUT to 0x501.
 * usage: rom_loop ROM.bin  -> prints "<exits> <seconds>" */
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
#define ROM_SIZE 0x10000

static void die(const char *what) { perror(what); exit(1); }

static void slot(int vm, int id, unsigned long gpa, unsigned long size, void *host, int flags)
{
    struct kvm_userspace_memory_region r = { .slot = id, .flags = flags, .guest_phys_addr = gpa,
                                             .memory_size = size, .userspace_addr = (unsigned long)host };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) die("KVM_SET_USER_MEMORY_REGION");
}

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: %s ROM.bin\n", argv[0]); return 2; }
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("/dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    unsigned char *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    unsigned char *rom = mmap(NULL, ROM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(rom, 1, ROM_SIZE, f) != ROM_SIZE) die(argv[1]);
    fclose(f);
    slot(vm, 0, 0, 0xd0000, ram, 0);
    slot(vm, 1, 0xd1000, 0xf0000 - 0xd1000, ram + 0xd1000, 0);
    slot(vm, 2, 0xf0000, ROM_SIZE, rom, KVM_MEM_READONLY);
    slot(vm, 3, 0x100000, RAM_SIZE - 0x100000, ram + 0x100000, 0);
    slot(vm, 4, 0xffff0000, ROM_SIZE, rom, KVM_MEM_READONLY);
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
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
