// Command floorinit is the whole user space of bench/side's kernel-floor
// boot: the /init of an initramfs that holds nothing else. It mounts /proc,
// waits until settle after its own start, prints /proc/meminfo between
// marker lines on the console and powers the machine off, so that the
// memory in use it reports is the kernel's own plus this small static
// program's.
//
// Build it static (CGO_ENABLED=0); bench/side does that itself.
package main

import (
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

// settle is how long after its start /init waits before it reads
// /proc/meminfo (the kernel's deferred work settles; Cairn's web example
// answers about 2.3 s after its first user-space process).
const settle = 3 * time.Second

// The console lines bench/side reads (keep in sync with bench/side/floor.go).
const (
	startLine = "floor: early: start t="
	beginLine = "floor: meminfo begin t="
	endLine   = "floor: meminfo end"
)

// boottime returns CLOCK_BOOTTIME in seconds, the clock the other systems'
// early lines print.
func boottime() string {
	const clockBoottime = 7
	var ts syscall.Timespec
	if _, _, e := syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, clockBoottime, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		return "-1"
	}
	return strconv.FormatFloat(float64(ts.Sec)+float64(ts.Nsec)/1e9, 'f', 3, 64)
}

func say(s string) { _, _ = os.Stdout.WriteString(s) }

func main() {
	start := time.Now()
	say("\n" + startLine + boottime() + "\n")
	if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		say("floor: mount /proc: " + err.Error() + "\n")
	}
	time.Sleep(time.Until(start.Add(settle)))
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		say("floor: " + err.Error() + "\n")
	}
	say(beginLine + boottime() + "\n" + string(b) + endLine + "\n")
	syscall.Sync()
	if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		say("floor: power off: " + err.Error() + "\n")
	}
	for { // PID 1 must not exit
		time.Sleep(time.Hour)
	}
}
