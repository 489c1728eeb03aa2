package seccomp

import (
	"encoding/binary"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/elastic/go-seccomp-bpf/arch"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/runtime/caps"
)

const auditArchI386 = 0x40000003

// run evaluates prog on a seccomp_data record. eval loads words big-endian,
// so every 32-bit word is stored big-endian at the offset the
// (little-endian) kernel layout gives it.
func run(t *testing.T, prog *Program, archID uint32, nr uint32, args ...uint64) uint32 {
	t.Helper()
	raw := make([]bpf.RawInstruction, len(prog.Instructions))
	for i, in := range prog.Instructions {
		raw[i] = bpf.RawInstruction{Op: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("disassemble failed")
	}
	pkt := make([]byte, 64)
	binary.BigEndian.PutUint32(pkt[0:], nr)
	binary.BigEndian.PutUint32(pkt[4:], archID)
	for i, a := range args {
		binary.BigEndian.PutUint32(pkt[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(pkt[20+8*i:], uint32(a>>32))
	}
	return eval(t, insns, pkt)
}

// eval is a tiny interpreter for the instruction subset the programs use
// (x/net/bpf's VM clamps return values to the packet length).
func eval(t *testing.T, insns []bpf.Instruction, pkt []byte) uint32 {
	var a uint32
	for pc := 0; pc < len(insns); pc++ {
		switch in := insns[pc].(type) {
		case bpf.LoadAbsolute:
			a = binary.BigEndian.Uint32(pkt[in.Off:])
		case bpf.RetConstant:
			return in.Val
		case bpf.Jump:
			pc += int(in.Skip)
		case bpf.JumpIf:
			var c bool
			switch in.Cond {
			case bpf.JumpEqual:
				c = a == in.Val
			case bpf.JumpNotEqual:
				c = a != in.Val
			case bpf.JumpGreaterThan:
				c = a > in.Val
			case bpf.JumpLessThan:
				c = a < in.Val
			case bpf.JumpGreaterOrEqual:
				c = a >= in.Val
			case bpf.JumpLessOrEqual:
				c = a <= in.Val
			case bpf.JumpBitsSet:
				c = a&in.Val != 0
			case bpf.JumpBitsNotSet:
				c = a&in.Val == 0
			default:
				t.Fatalf("unhandled cond %v", in.Cond)
			}
			if c {
				pc += int(in.SkipTrue)
			} else {
				pc += int(in.SkipFalse)
			}
		case bpf.ALUOpConstant:
			if in.Op != bpf.ALUOpAnd {
				t.Fatalf("unhandled alu %v", in)
			}
			a &= in.Val
		default:
			t.Fatalf("unhandled instruction %#v", in)
		}
	}
	t.Fatal("fell off the program")
	return 0
}

func nr(t *testing.T, name string) uint32 {
	info, err := arch.GetInfo("amd64")
	if err != nil {
		t.Fatal(err)
	}
	n, ok := info.SyscallNames[name]
	if !ok {
		t.Fatalf("no syscall %s", name)
	}
	return uint32(n)
}

func TestDefaultProfileDecisions(t *testing.T) {
	docker, err := Compile(DefaultProfile(caps.DockerDefault()))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := Compile(DefaultProfile(append(caps.DockerDefault(), "CAP_SYS_ADMIN")))
	if err != nil {
		t.Fatal(err)
	}
	eperm := uint32(retErrno | unix.EPERM)
	enosys := uint32(retErrno | unix.ENOSYS)
	for _, tc := range []struct {
		name string
		prog *Program
		arch uint32
		nr   string
		x32  bool
		args []uint64
		want uint32
	}{
		{"mkdir allowed", docker, auditArchX8664, "mkdir", false, nil, retAllow},
		{"execve allowed", docker, auditArchX8664, "execve", false, nil, retAllow},
		{"mount refused", docker, auditArchX8664, "mount", false, nil, eperm},
		{"unshare refused", docker, auditArchX8664, "unshare", false, nil, eperm},
		{"keyctl refused", docker, auditArchX8664, "keyctl", false, nil, eperm},
		{"add_key refused", docker, auditArchX8664, "add_key", false, nil, eperm},
		{"setns refused", docker, auditArchX8664, "setns", false, nil, eperm},
		{"kexec_load refused", docker, auditArchX8664, "kexec_load", false, nil, eperm},
		{"ptrace refused", docker, auditArchX8664, "ptrace", false, nil, retAllow}, // moby: allowed on kernel >= 4.8
		{"reboot refused", docker, auditArchX8664, "reboot", false, nil, eperm},
		{"clone plain", docker, auditArchX8664, "clone", false, []uint64{unix.CLONE_VM | unix.CLONE_THREAD}, retAllow},
		{"clone newns", docker, auditArchX8664, "clone", false, []uint64{unix.CLONE_NEWNS}, eperm},
		{"clone newuser", docker, auditArchX8664, "clone", false, []uint64{unix.CLONE_NEWUSER | unix.CLONE_VM}, eperm},
		{"clone3 enosys", docker, auditArchX8664, "clone3", false, nil, enosys},
		{"personality 0", docker, auditArchX8664, "personality", false, []uint64{0}, retAllow},
		{"personality 8", docker, auditArchX8664, "personality", false, []uint64{8}, retAllow},
		{"personality query", docker, auditArchX8664, "personality", false, []uint64{0xffffffff}, retAllow},
		{"personality other", docker, auditArchX8664, "personality", false, []uint64{0x0400000}, eperm},
		{"socket inet", docker, auditArchX8664, "socket", false, []uint64{unix.AF_INET}, retAllow},
		{"socket vsock", docker, auditArchX8664, "socket", false, []uint64{unix.AF_VSOCK}, eperm},
		{"x32 abi", docker, auditArchX8664, "mkdir", true, nil, enosys},
		{"i386 abi", docker, auditArchI386, "mkdir", false, nil, eperm},
		{"admin mount", admin, auditArchX8664, "mount", false, nil, retAllow},
		{"admin clone newns", admin, auditArchX8664, "clone", false, []uint64{unix.CLONE_NEWNS}, retAllow},
		{"admin clone3", admin, auditArchX8664, "clone3", false, nil, retAllow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := nr(t, tc.nr)
			if tc.x32 {
				n |= 0x40000000
			}
			if got := run(t, tc.prog, tc.arch, n, tc.args...); got != tc.want {
				t.Fatalf("got %#x want %#x", got, tc.want)
			}
		})
	}
}

func TestDefaultProfileSkipsOnlyForeignNames(t *testing.T) {
	p, err := Compile(DefaultProfile(caps.DockerDefault()))
	if err != nil {
		t.Fatal(err)
	}
	// Names that are not amd64 syscalls: 32-bit variants, time64
	// variants, socketcall/ipc multiplexers and i386-only calls.
	for _, n := range p.Skipped {
		ok := strings.HasSuffix(n, "32") || strings.HasSuffix(n, "_time64") || strings.HasSuffix(n, "64") ||
			slices.Contains([]string{"_llseek", "_newselect", "ipc", "socketcall", "sigprocmask", "sigreturn",
				"waitpid", "recv", "send", "mmap2", "ugetrlimit", "stime"}, n)
		if !ok {
			t.Errorf("unexpected skipped name %q", n)
		}
	}
	if len(p.Instructions) > 1000 {
		t.Errorf("program unexpectedly large: %d", len(p.Instructions))
	}
}

func TestCompileRefuses(t *testing.T) {
	big := uint(70000)
	for _, tc := range []struct {
		name string
		p    *specs.LinuxSeccomp
	}{
		{"nil", nil},
		{"notify", &specs.LinuxSeccomp{DefaultAction: specs.ActNotify}},
		{"errno out of range", &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: &big}},
		{"bad op", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 0, Op: "SCMP_CMP_BOGUS"}}}}}},
		{"foreign arch", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Architectures: []specs.Arch{specs.ArchAARCH64}}},
		{"arg index", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 6, Op: specs.OpEqualTo}}}}}},
		{"unknown flag", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Flags: []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_BOGUS"}}},
	} {
		if _, err := Compile(tc.p); err == nil {
			t.Errorf("%s: want error", tc.name)
		}
	}
}

func TestCompileCustomProfile(t *testing.T) {
	p, err := Compile(&specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"mkdir", "mkdir", "no_such_call"}, Action: specs.ActErrno},
			{Names: []string{"read"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 7, Op: specs.OpEqualTo}, {Index: 0, Value: 9, Op: specs.OpEqualTo}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Skipped, []string{"no_such_call"}) {
		t.Errorf("skipped = %v", p.Skipped)
	}
	eperm := uint32(retErrno | unix.EPERM)
	for _, tc := range []struct {
		nr   string
		args []uint64
		want uint32
	}{
		{"mkdir", nil, eperm}, {"read", []uint64{7}, eperm}, {"read", []uint64{9}, eperm}, {"read", []uint64{8}, retAllow}, {"write", nil, retAllow},
	} {
		if got := run(t, p, auditArchX8664, nr(t, tc.nr), tc.args...); got != tc.want {
			t.Errorf("%s%v = %#x want %#x", tc.nr, tc.args, got, tc.want)
		}
	}
}

func TestCompileOperators(t *testing.T) {
	rule := func(op specs.LinuxSeccompOperator, v, v2 uint64) *Program {
		p, err := Compile(&specs.LinuxSeccomp{
			DefaultAction: specs.ActAllow,
			Syscalls: []specs.LinuxSyscall{
				{Names: []string{"read"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 2, Value: v, ValueTwo: v2, Op: op}}},
				// A later rule must still see the syscall number.
				{Names: []string{"write"}, Action: specs.ActKillProcess},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	const big = 0x1_0000_0005
	eperm := uint32(retErrno | unix.EPERM)
	for _, tc := range []struct {
		op   specs.LinuxSeccompOperator
		v    uint64
		v2   uint64
		arg  uint64
		want bool
	}{
		{specs.OpEqualTo, big, 0, big, true},
		{specs.OpEqualTo, big, 0, 5, false},
		{specs.OpNotEqual, big, 0, 5, true},
		{specs.OpNotEqual, big, 0, big, false},
		{specs.OpGreaterThan, big, 0, big + 1, true},
		{specs.OpGreaterThan, big, 0, big, false},
		{specs.OpGreaterThan, big, 0, 0x2_0000_0000, true},
		{specs.OpGreaterThan, big, 0, 0xffff_ffff, false},
		{specs.OpGreaterEqual, big, 0, big, true},
		{specs.OpGreaterEqual, big, 0, big - 1, false},
		{specs.OpLessThan, big, 0, big - 1, true},
		{specs.OpLessThan, big, 0, big, false},
		{specs.OpLessThan, big, 0, 0x2_0000_0000, false},
		{specs.OpLessEqual, big, 0, big, true},
		{specs.OpLessEqual, big, 0, big + 1, false},
		{specs.OpMaskedEqual, 0xf0, 0x30, 0x3c, true},
		{specs.OpMaskedEqual, 0xf0, 0x30, 0x4c, false},
		{specs.OpMaskedEqual, 0x1_0000_0000, 0, 0x1_0000_0000, false},
	} {
		p := rule(tc.op, tc.v, tc.v2)
		want := uint32(retAllow)
		if tc.want {
			want = eperm
		}
		if got := run(t, p, auditArchX8664, nr(t, "read"), 0, 0, tc.arg); got != want {
			t.Errorf("%s %#x/%#x on %#x = %#x want %#x", tc.op, tc.v, tc.v2, tc.arg, got, want)
		}
		if got := run(t, p, auditArchX8664, nr(t, "write"), 0, 0, tc.arg); got != retKillProcess {
			t.Errorf("%s: write after failed arg check = %#x want kill", tc.op, got)
		}
	}
}

func FuzzCompile(f *testing.F) {
	b, _ := json.Marshal(DefaultProfile(caps.DockerDefault()))
	f.Add(b)
	f.Add([]byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_MASKED_EQ"}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var p specs.LinuxSeccomp
		if json.Unmarshal(data, &p) != nil {
			return
		}
		prog, err := Compile(&p)
		if err != nil {
			return
		}
		if len(prog.Instructions) == 0 || len(prog.Instructions) > maxInstructions {
			t.Fatalf("bad program length %d", len(prog.Instructions))
		}
	})
}
