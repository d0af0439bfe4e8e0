qemu-system-x86_64 -M pc -m 128 -display none -nodefaults -monitor stdio
# started without -S, waited 3 s (SeaBIOS reached 'No bootable device'), then HMP: info mtree -f; info mtree
# accel: tcg (the default); QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)
