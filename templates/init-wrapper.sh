#!/bin/sh
# /sbin/init written by tmpl inject-envd ({{TMPL_VERSION}}). PID 1 for an E2B sandbox:
# mount the kernel filesystems that are not there yet, send output to the serial console,
# start envd and restart it if it ever exits, so that PID 1 itself never returns (a returning
# PID 1 is "Kernel panic - not syncing: Attempted to kill init!").
ENVD={{ENVD}}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

mounted() {
	# Is something mounted at $1? (/proc/mounts once /proc is up)
	[ -r /proc/mounts ] && while read -r _ mp _; do [ "$mp" = "$1" ] && return 0; done < /proc/mounts
	return 1
}

[ -d /proc ] || mkdir -p /proc
mounted /proc || mount -t proc proc /proc
[ -d /sys ] || mkdir -p /sys
mounted /sys || mount -t sysfs sysfs /sys
# cgroup v2, which envd's cgroup manager expects at /sys/fs/cgroup (its -cgroup-root default).
[ -d /sys/fs/cgroup ] && { mounted /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup; }
[ -d /dev ] || mkdir -p /dev
mounted /dev || mount -t devtmpfs devtmpfs /dev
[ -d /dev/pts ] || mkdir -p /dev/pts
mounted /dev/pts || mount -t devpts -o gid=5,mode=620 devpts /dev/pts
# POSIX shared memory (shm_open, Python multiprocessing).
[ -d /dev/shm ] || mkdir -p /dev/shm
mounted /dev/shm || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
[ -d /run ] || mkdir -p /run
mounted /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
[ -d /tmp ] || mkdir -p /tmp
mounted /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp

# The hostname the image carries, without needing a hostname binary.
if [ -r /etc/hostname ] && [ -w /proc/sys/kernel/hostname ]; then
	read -r name < /etc/hostname && [ -n "$name" ] && echo "$name" > /proc/sys/kernel/hostname
fi

# Output to the serial console (stdin from /dev/null), once /dev has them.
[ -c /dev/console ] && [ -c /dev/null ] && exec </dev/null >/dev/console 2>&1

# envd runs in the foreground: the shell waits for it and reaps any orphaned child while it
# waits (PID 1 inherits them). Without `sleep` in the image, a crude counting loop keeps a
# crashing envd from spinning the CPU.
while :; do
	echo "tmpl-init: starting envd ($ENVD)"
	"$ENVD"{{ARGS}}
	echo "tmpl-init: envd exited with status $?; restarting in 1s"
	sleep 1 2>/dev/null || { i=0; while [ "$i" -lt 200000 ]; do i=$((i + 1)); done; }
done
