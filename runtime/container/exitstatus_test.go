package container

import (
	"errors"
	"os/exec"
	"testing"
)

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		script            string
		wantCode, wantSig int
	}{
		{"exit 0", 0, 0},
		{"exit 3", 3, 0},
		{"kill -9 $$", 137, 9},
		{"kill -15 $$", 143, 15},
	} {
		cmd := exec.Command("/bin/sh", "-c", tc.script)
		if err := cmd.Start(); err != nil {
			t.Skipf("no /bin/sh: %v", err)
		}
		got := exitStatus(cmd.Process.Wait())
		if got.Code != tc.wantCode || got.Signal != tc.wantSig || got.ExitedAt.IsZero() {
			t.Errorf("%q: exit %+v, want code %d signal %d", tc.script, got, tc.wantCode, tc.wantSig)
		}
	}
	if got := exitStatus(nil, errors.New("wait failed")); got.Code != -1 || got.Signal != 0 {
		t.Errorf("failed wait: %+v, want code -1", got)
	}
}
