package system

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestMemUsedListsProcesses(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	line := memUsed()
	self := fmt.Sprintf("[%d] ", os.Getpid())
	for _, want := range []string{"memory used ", "MemAvailable", "anonymous memory by process: ", self, "PID 1's Go heap: in use "} {
		if !strings.Contains(line, want) {
			t.Errorf("memUsed() = %q, missing %q", line, want)
		}
	}
}
