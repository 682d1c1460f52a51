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
[ -d /dev ] || mkdir -p /dev
mounted /dev || mount -t devtmpfs devtmpfs /dev
[ -d /dev/pts ] || mkdir -p /dev/pts
mounted /dev/pts || mount -t devpts -o gid=5,mode=620 devpts /dev/pts
[ -d /run ] || mkdir -p /run
mounted /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
[ -d /tmp ] || mkdir -p /tmp
mounted /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp

[ -c /dev/console ] && exec </dev/null >/dev/console 2>&1

# envd runs in the foreground: the shell waits for it (and reaps any orphaned child while it
# waits), and it keeps the console as stdin even when /dev could not be mounted.
while :; do
	echo "tmpl-init: starting envd ($ENVD)"
	"$ENVD"{{ARGS}}
	echo "tmpl-init: envd exited with status $?; restarting in 1s"
	sleep 1 || :
done
