#!/bin/busybox sh
# refscope guest init (PID 1). `cargo xtask vm` writes it into the initramfs
# as /init, with its settings in /etc/refscope/vm.conf (see guest.rs).
#
#  1. mount proc, sysfs, devtmpfs, tracefs, debugfs, bpffs, cgroup2
#  2. insmod the modules listed in /etc/refscope/modules, in that order
#  3. turn the persistent-memory region (memmap= or ACPI NFIT) into an fsdax
#     or devdax namespace through sysfs, make a filesystem, mount it -o dax
#     at /mnt/dax
#  4. mount the host share (9p) at /share
#  5. run /etc/refscope/command: stdout and stderr each go to their own
#     virtio port; start time, taint flags and exit status go to the control
#     port (the host reads them); or start a shell on the console
#  6. power off
#
# Messages from this script go to the kernel console (ttyS0), prefixed
# "init:". The host scans that console for oopses and WARNs.

/bin/busybox mkdir -p /bin /sbin /proc /sys /dev /tmp /run /root /mnt/dax
/bin/busybox --install -s /bin
# /sbin first: the real mke2fs and mkfs.xfs beat busybox's applets.
export PATH=/sbin:/bin HOME=/root TERM=linux

. /etc/refscope/vm.conf

CTL=
# Messages carry the guest's uptime, to see where boot time goes.
log() { echo "init: [$(cut -d ' ' -f 1 /proc/uptime)] $*"; }
die() {
    echo "init: error: $*"
    [ -n "$CTL" ] && echo "error $*" >"$CTL"
    if [ "$VM_INTERACTIVE" = 1 ]; then
        echo "init: starting a shell to look around; exit it to power off"
        setsid cttyhack sh -l
    fi
    poweroff -f
}

# --- 1. pseudo filesystems -------------------------------------------------
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
hostname "refscope-$VM_KERNEL"
log "started"

# wait_for PATH SECONDS (device probing is async), and the other helpers
# every guest script uses.
. /lib/refscope/guest.sh

# --- 2. modules ------------------------------------------------------------
while read -r m; do
    [ -n "$m" ] || continue
    name=${m##*/}
    name=$(echo "${name%.ko}" | tr - _)
    [ -d "/sys/module/$name" ] && continue
    insmod "/lib/modules/$VM_RELEASE/$m" || die "insmod $m failed"
done </etc/refscope/modules
log "modules loaded"

# The control port first, so that setup errors reach the host.
port() {
    for p in /sys/class/virtio-ports/vport*; do
        [ "$(cat "$p/name" 2>/dev/null)" = "$1" ] && echo "/dev/${p##*/}" && return 0
    done
    return 1
}
if [ "$VM_INTERACTIVE" != 1 ]; then
    i=0
    until CTL=$(port refscope.control) && [ -e "$CTL" ]; do
        i=$((i + 1))
        if [ $i -gt 500 ]; then
            CTL=
            die "no virtio port refscope.control (virtio_console missing?)"
        fi
        usleep 20000
    done
    OUT=$(port refscope.stdout) || die "no virtio port refscope.stdout"
    ERR=$(port refscope.stderr) || die "no virtio port refscope.stderr"
    wait_for "$OUT" 10 && wait_for "$ERR" 10 || die "virtio port devices did not appear"
fi

# --- 3. persistent memory --------------------------------------------------
nd=/sys/bus/nd/devices
ns=
i=0
while [ -z "$ns" ]; do
    for d in $nd/namespace*.*; do
        [ -e "$d/size" ] && [ "$(cat "$d/size")" != 0 ] && ns=${d##*/} && break
    done
    [ -n "$ns" ] && break
    i=$((i + 1))
    if [ $i -gt 500 ]; then
        hint="is the region in the memory map?"
        [ -s /etc/refscope/modules ] || hint="no modules were loaded: are LIBNVDIMM, BLK_DEV_PMEM and X86_PMEM_LEGACY (or ACPI_NFIT) built in?"
        die "no persistent-memory namespace appeared (pmem=$VM_PMEM; $hint)"
    fi
    usleep 20000
done
region=$(basename "$(dirname "$(readlink -f "$nd/$ns")")")
[ -e "$nd/$ns/driver" ] && echo "$ns" >"$nd/$ns/driver/unbind"
case "$VM_MODE" in
fsdax) seed=$(cat "$nd/$region/pfn_seed") driver=nd_pmem ;;
devdax) seed=$(cat "$nd/$region/dax_seed") driver=dax_pmem ;;
*) die "unknown mode $VM_MODE" ;;
esac
cat /proc/sys/kernel/random/uuid >"$nd/$seed/uuid" || die "$seed: cannot set uuid"
echo "$VM_MEMMAP_ON" >"$nd/$seed/mode" || die "$seed: cannot set mode $VM_MEMMAP_ON"
echo "$VM_ALIGN" >"$nd/$seed/align" || die "$seed: cannot set align $VM_ALIGN (supported: $(cat "$nd/$seed/supported_alignments"))"
echo "$ns" >"$nd/$seed/namespace" || die "$seed: cannot attach $ns"
echo "$seed" >"/sys/bus/nd/drivers/$driver/bind" || die "cannot bind $seed to $driver"
log "$ns on $region is $VM_MODE ($seed, struct pages in $VM_MEMMAP_ON, align $VM_ALIGN)"

if [ "$VM_MODE" = fsdax ]; then
    blk=$(ls "$nd/$seed/block" 2>/dev/null | head -n 1)
    [ -n "$blk" ] || die "$seed has no block device"
    wait_for "/dev/$blk" 10 || die "/dev/$blk did not appear"
    case "$VM_FS" in
    ext4)
        opts=
        # Stripe-align allocations so 2 MiB extents can map as PMDs.
        [ "$VM_ALIGN" = 2097152 ] && opts="stride=512,stripe_width=512"
        # Lazy inode-table and journal init: no zeroing tens of MiB under
        # emulation (noinit_itable below keeps the kernel from doing it
        # in the background either).
        /sbin/mke2fs -q -F -t ext4 -b 4096 -E lazy_itable_init=1,lazy_journal_init=1${opts:+,$opts} \
            "/dev/$blk" || die "mke2fs failed on /dev/$blk"
        mount_opts=dax,noinit_itable
        ;;
    xfs)
        opts=
        # Stripe unit 2 MiB aligns extents for PMDs; two allocation groups
        # keep room for the 64 MiB log mkfs insists on with a stripe unit.
        [ "$VM_ALIGN" = 2097152 ] && opts="-d su=2m,sw=1,agcount=2 -l su=4096"
        # DAX excludes reflink on these kernels.
        /sbin/mkfs.xfs -q -f -m reflink=0 $opts "/dev/$blk" || die "mkfs.xfs failed on /dev/$blk"
        mount_opts=dax
        ;;
    *) die "unknown filesystem $VM_FS" ;;
    esac
    log "/dev/$blk: $VM_FS made"
    mount -t "$VM_FS" -o "$mount_opts" "/dev/$blk" /mnt/dax || die "mount -o $mount_opts /dev/$blk failed"
    grep " /mnt/dax " /proc/mounts | grep -q dax || die "/mnt/dax is mounted without DAX: $(grep ' /mnt/dax ' /proc/mounts)"
    log "/dev/$blk: $VM_FS mounted with DAX at /mnt/dax"
else
    dev=$(ls /sys/bus/dax/devices 2>/dev/null | head -n 1)
    [ -n "$dev" ] || die "no device-dax device after binding $seed"
    wait_for "/dev/$dev" 10 || die "/dev/$dev did not appear"
    log "/dev/$dev is a device-dax device"
fi

# --- 4. host share ---------------------------------------------------------
if [ "$VM_SHARE" = 1 ]; then
    mkdir -p /share
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 refscope /share ||
        die "mounting the host share (9p) at /share failed"
fi

# --- 5. the command --------------------------------------------------------
cd /root
if [ "$VM_INTERACTIVE" = 1 ]; then
    if [ -s /etc/refscope/command ]; then
        # A command on the terminal (e.g. a TUI): the console is its tty.
        setsid cttyhack sh /etc/refscope/command
    else
        log "ready: /mnt/dax, refscope in /bin; exit the shell (or Ctrl-A x) to power off"
        setsid cttyhack sh -l
    fi
    poweroff -f
fi
exec 3>"$CTL"
echo "start $(cut -d ' ' -f 1 /proc/uptime)" >&3
sh /etc/refscope/command </dev/null >"$OUT" 2>"$ERR" 3>&-
rc=$?
echo "taint $(cat /proc/sys/kernel/tainted)" >&3
echo "exit $rc" >&3
exec 3>&-
sync

# --- 6. done ---------------------------------------------------------------
poweroff -f
