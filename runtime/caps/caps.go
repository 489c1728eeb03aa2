// Package caps maps Linux capability names to numbers, holds Docker's
// default capability set and applies an OCI capability set to the calling
// thread (the container stage execs from that same thread).
package caps

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// names indexes capability numbers (linux/capability.h) to their OCI names.
var names = [...]string{
	0:  "CAP_CHOWN",
	1:  "CAP_DAC_OVERRIDE",
	2:  "CAP_DAC_READ_SEARCH",
	3:  "CAP_FOWNER",
	4:  "CAP_FSETID",
	5:  "CAP_KILL",
	6:  "CAP_SETGID",
	7:  "CAP_SETUID",
	8:  "CAP_SETPCAP",
	9:  "CAP_LINUX_IMMUTABLE",
	10: "CAP_NET_BIND_SERVICE",
	11: "CAP_NET_BROADCAST",
	12: "CAP_NET_ADMIN",
	13: "CAP_NET_RAW",
	14: "CAP_IPC_LOCK",
	15: "CAP_IPC_OWNER",
	16: "CAP_SYS_MODULE",
	17: "CAP_SYS_RAWIO",
	18: "CAP_SYS_CHROOT",
	19: "CAP_SYS_PTRACE",
	20: "CAP_SYS_PACCT",
	21: "CAP_SYS_ADMIN",
	22: "CAP_SYS_BOOT",
	23: "CAP_SYS_NICE",
	24: "CAP_SYS_RESOURCE",
	25: "CAP_SYS_TIME",
	26: "CAP_SYS_TTY_CONFIG",
	27: "CAP_MKNOD",
	28: "CAP_LEASE",
	29: "CAP_AUDIT_WRITE",
	30: "CAP_AUDIT_CONTROL",
	31: "CAP_SETFCAP",
	32: "CAP_MAC_OVERRIDE",
	33: "CAP_MAC_ADMIN",
	34: "CAP_SYSLOG",
	35: "CAP_WAKE_ALARM",
	36: "CAP_BLOCK_SUSPEND",
	37: "CAP_AUDIT_READ",
	38: "CAP_PERFMON",
	39: "CAP_BPF",
	40: "CAP_CHECKPOINT_RESTORE",
}

// MaxKnown is the highest capability number this package knows by name.
const MaxKnown = len(names) - 1

// Default returns the capability set containers get by default: Docker's
// without CAP_MKNOD. Docker relies on the device cgroup to stop a container
// from opening the nodes it creates; Cairn has no cgroup v2 device filter
// yet, so it does not hand out the capability to create them.
func Default() []string {
	var out []string
	for _, c := range DockerDefault() {
		if c != "CAP_MKNOD" {
			out = append(out, c)
		}
	}
	return out
}

// DockerDefault returns Docker's default capability set (moby oci/caps
// DefaultCapabilities), in a fresh slice.
func DockerDefault() []string {
	return []string{
		"CAP_CHOWN",
		"CAP_DAC_OVERRIDE",
		"CAP_FSETID",
		"CAP_FOWNER",
		"CAP_MKNOD",
		"CAP_NET_RAW",
		"CAP_SETGID",
		"CAP_SETUID",
		"CAP_SETFCAP",
		"CAP_SETPCAP",
		"CAP_NET_BIND_SERVICE",
		"CAP_SYS_CHROOT",
		"CAP_KILL",
		"CAP_AUDIT_WRITE",
	}
}

// Value returns the number of a capability given by name ("CAP_SYS_ADMIN";
// the CAP_ prefix and case are optional).
func Value(name string) (int, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	for i, v := range names {
		if v == n {
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown capability %q", name)
}

// Name returns the name of capability number c.
func Name(c int) string {
	if c >= 0 && c < len(names) {
		return names[c]
	}
	return "CAP_" + strconv.Itoa(c)
}

// Mask turns a list of capability names into a bit mask.
func Mask(list []string) (uint64, error) {
	var m uint64
	for _, n := range list {
		v, err := Value(n)
		if err != nil {
			return 0, err
		}
		m |= 1 << uint(v)
	}
	return m, nil
}

// Names turns a bit mask into a sorted list of capability names.
func Names(m uint64) []string {
	var out []string
	for c := 0; c < 64; c++ {
		if m&(1<<uint(c)) != 0 {
			out = append(out, Name(c))
		}
	}
	sort.Strings(out)
	return out
}

// LastCap returns the highest capability number the running kernel knows.
func LastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("read cap_last_cap: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 || n > 63 {
		return 0, fmt.Errorf("bad cap_last_cap %q", strings.TrimSpace(string(b)))
	}
	return n, nil
}
