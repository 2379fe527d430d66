/*
 * The firmware kiln boots to find out whether KVM can run a guest on this host.
 * /dev/kvm can exist and accept a VM while guests hang as soon as they leave real
 * mode, so the probe walks the same path a kernel does: real mode, protected mode,
 * paging, long mode; then it writes to QEMU's isa-debug-exit port (0xf4), which makes
 * QEMU exit with status (0x42 << 1) | 1 = 133. A hang means: use TCG.
 *
 * The bytes are embedded in src/vm/kvm.rs; to regenerate them:
 *   as --32 -o p.o kvm_probe.S && objcopy -O binary -j .text p.o probe.bin
 * and take bytes 0..181 and 0xfff0..0x10000.
 */
        .code16
        .org 0
start16:
        cli
        xor %ax, %ax
        mov %ax, %ds
        mov $0xf000, %ax
        mov %ax, %ds
        lgdtl gdtr
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl $0x08, $(0xf0000 + start32)
        .code32
start32:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        /* identity map the first 2 MiB: PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000 */
        mov $0x1000, %edi
        xor %eax, %eax
        mov $(0x3000/4), %ecx
        rep stosl
        movl $0x2003, 0x1000
        movl $0x3003, 0x2000
        movl $0x0083, 0x3000
        mov $0x1000, %eax
        mov %eax, %cr3
        mov %cr4, %eax
        or $0x20, %eax          /* PAE */
        mov %eax, %cr4
        mov $0xc0000080, %ecx   /* EFER */
        rdmsr
        or $0x100, %eax         /* LME */
        wrmsr
        mov %cr0, %eax
        or $0x80000000, %eax    /* PG */
        mov %eax, %cr0
        ljmp $0x18, $(0xf0000 + start64)
        .code64
start64:
        mov $0x42, %al
        out %al, $0xf4
1:      hlt
        jmp 1b
        .p2align 3
gdt:
        .quad 0
        .quad 0x00cf9a000000ffff   /* 0x08 code32 */
        .quad 0x00cf92000000ffff   /* 0x10 data */
        .quad 0x00af9a000000ffff   /* 0x18 code64 */
gdtr:
        .word gdtr - gdt - 1
        .long 0xf0000 + gdt
        .code16
        .org 0xfff0
reset:
        ljmp $0xf000, $start16
        .org 0x10000
