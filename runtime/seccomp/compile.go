package seccomp

import (
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"github.com/elastic/go-seccomp-bpf/arch"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Instruction is one classic BPF instruction (struct sock_filter).
type Instruction = unix.SockFilter

// Program is a compiled seccomp filter.
type Program struct {
	Instructions []Instruction `json:"insns"`
	// Flags are SECCOMP_FILTER_FLAG_* bits passed to seccomp(2).
	Flags uint `json:"flags,omitempty"`
	// Skipped lists syscall names of the profile that amd64 does not have.
	Skipped []string `json:"skipped,omitempty"`
}

// maxInstructions is the kernel's BPF_MAXINSNS.
const maxInstructions = 4096

// Compile turns an OCI seccomp profile into a BPF program for linux/amd64.
// Only the native x86_64 ABI is allowed: calls through the x32 ABI fail with
// ENOSYS and calls through any other audit arch (i386) get the default action
// (moby allows x86 with the same list; Cairn does not ship 32-bit code).
// Syscall names unknown on amd64 are skipped, as runc does. Rules are tried in
// profile order, the first match wins. SCMP_ACT_NOTIFY is refused.
//
// The emitter is Cairn's own: github.com/elastic/go-seccomp-bpf v1.6.0 is
// used only for its amd64 syscall table, because its assembler does not
// reload the syscall number after a failed argument check (a later rule then
// compares an argument value against syscall numbers).
func Compile(p *specs.LinuxSeccomp) (*Program, error) {
	if p == nil {
		return nil, errors.New("seccomp: nil profile")
	}
	info, err := arch.GetInfo("amd64")
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	if len(p.Architectures) > 0 && !slices.Contains(p.Architectures, specs.ArchX86_64) {
		return nil, fmt.Errorf("seccomp: profile does not cover SCMP_ARCH_X86_64 (%v)", p.Architectures)
	}
	prog := &Program{}
	for _, f := range p.Flags {
		switch f {
		case specs.LinuxSeccompFlagLog:
			prog.Flags |= unix.SECCOMP_FILTER_FLAG_LOG
		case specs.LinuxSeccompFlagSpecAllow:
			prog.Flags |= unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW
		default:
			return nil, fmt.Errorf("seccomp: flag %s not supported", f)
		}
	}
	def, err := action(p.DefaultAction, p.DefaultErrnoRet)
	if err != nil {
		return nil, fmt.Errorf("seccomp default action: %w", err)
	}
	var a asm
	a.ld(offArch)
	a.jeq(auditArchX8664, 1, 0)
	a.ret(def)
	a.ld(offNr)
	a.jge(x32Bit, 0, 1)
	a.ret(retErrno | uint32(unix.ENOSYS))
	for i, sc := range p.Syscalls {
		act, err := action(sc.Action, sc.ErrnoRet)
		if err != nil {
			return nil, fmt.Errorf("seccomp rule %d: %w", i, err)
		}
		sets, err := conditions(sc.Args)
		if err != nil {
			return nil, fmt.Errorf("seccomp rule %d (%v): %w", i, sc.Names, err)
		}
		var nums []uint32
		for _, n := range sc.Names {
			num, ok := info.SyscallNames[n]
			if !ok {
				prog.Skipped = append(prog.Skipped, n)
				continue
			}
			if !slices.Contains(nums, uint32(num)) {
				nums = append(nums, uint32(num))
			}
		}
		for _, num := range nums {
			if len(sets) == 0 {
				a.jeq(num, 0, 1)
				a.ret(act)
				continue
			}
			block, err := condBlock(sets, act)
			if err != nil {
				return nil, fmt.Errorf("seccomp rule %d: %w", i, err)
			}
			if len(block) > 255 {
				return nil, fmt.Errorf("seccomp rule %d: argument checks too long", i)
			}
			a.jeq(num, 0, uint8(len(block)))
			a.insns = append(a.insns, block...)
		}
	}
	a.ret(def)
	if len(a.insns) > maxInstructions {
		return nil, fmt.Errorf("seccomp: program has %d instructions, kernel limit is %d", len(a.insns), maxInstructions)
	}
	prog.Instructions = a.insns
	return prog, nil
}

const (
	offNr          = 0
	offArch        = 4
	offArgs        = 16
	auditArchX8664 = 0xc000003e
	x32Bit         = 0x40000000
	retAllow       = 0x7fff0000
	retErrno       = 0x00050000
	retTrace       = 0x7ff00000
	retLog         = 0x7ffc0000
	retTrap        = 0x00030000
	retKillThread  = 0x00000000
	retKillProcess = 0x80000000
)

// BPF opcodes (linux/bpf_common.h).
const (
	opLdAbsW = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	opJeq    = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	opJgt    = unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K
	opJge    = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
	opAnd    = unix.BPF_ALU | unix.BPF_AND | unix.BPF_K
	opRet    = unix.BPF_RET | unix.BPF_K
)

type asm struct{ insns []Instruction }

func (a *asm) ld(off uint32) { a.insns = append(a.insns, Instruction{Code: opLdAbsW, K: off}) }
func (a *asm) ret(v uint32)  { a.insns = append(a.insns, Instruction{Code: opRet, K: v}) }
func (a *asm) jeq(v uint32, t, f uint8) {
	a.insns = append(a.insns, Instruction{Code: opJeq, K: v, Jt: t, Jf: f})
}
func (a *asm) jge(v uint32, t, f uint8) {
	a.insns = append(a.insns, Instruction{Code: opJge, K: v, Jt: t, Jf: f})
}

// label-based jumps for the small condition blocks.
type jmp struct {
	at     int
	tl, fl int // label ids, -1: fall through
}

// condBlock emits the argument checks of one syscall: the condition sets are
// ORed, the conditions inside a set ANDed; a match returns act, no match
// reloads the syscall number and falls through to the next rule.
func condBlock(sets [][]cond, act uint32) ([]Instruction, error) {
	var (
		out    []Instruction
		jumps  []jmp
		labels = map[int]int{}
		next   = 0
	)
	newLabel := func() int { next++; return next }
	emit := func(in Instruction) { out = append(out, in) }
	jump := func(code uint16, k uint32, tl, fl int) {
		jumps = append(jumps, jmp{at: len(out), tl: tl, fl: fl})
		emit(Instruction{Code: code, K: k})
	}
	reload := newLabel()
	for si, set := range sets {
		fail := reload
		if si < len(sets)-1 {
			fail = newLabel()
		}
		for _, c := range set {
			pass := newLabel()
			hiOff, loOff := uint32(offArgs+8*c.arg+4), uint32(offArgs+8*c.arg)
			hi, lo := uint32(c.value>>32), uint32(c.value)
			switch c.op {
			case specs.OpEqualTo:
				emit(Instruction{Code: opLdAbsW, K: hiOff})
				jump(opJeq, hi, -1, fail)
				emit(Instruction{Code: opLdAbsW, K: loOff})
				jump(opJeq, lo, pass, fail)
			case specs.OpNotEqual:
				emit(Instruction{Code: opLdAbsW, K: hiOff})
				jump(opJeq, hi, -1, pass)
				emit(Instruction{Code: opLdAbsW, K: loOff})
				jump(opJeq, lo, fail, pass)
			case specs.OpMaskedEqual:
				mhi, mlo := uint32(c.value>>32), uint32(c.value)
				vhi, vlo := uint32(c.value2>>32), uint32(c.value2)
				emit(Instruction{Code: opLdAbsW, K: hiOff})
				emit(Instruction{Code: opAnd, K: mhi})
				jump(opJeq, vhi, -1, fail)
				emit(Instruction{Code: opLdAbsW, K: loOff})
				emit(Instruction{Code: opAnd, K: mlo})
				jump(opJeq, vlo, pass, fail)
			case specs.OpGreaterThan, specs.OpGreaterEqual, specs.OpLessThan, specs.OpLessEqual:
				// hi > v.hi decides "greater", hi == v.hi compares lo.
				emit(Instruction{Code: opLdAbsW, K: hiOff})
				greater, less := pass, fail
				if c.op == specs.OpLessThan || c.op == specs.OpLessEqual {
					greater, less = fail, pass
				}
				jump(opJgt, hi, greater, -1)
				jump(opJeq, hi, -1, less)
				emit(Instruction{Code: opLdAbsW, K: loOff})
				switch c.op {
				case specs.OpGreaterThan:
					jump(opJgt, lo, pass, fail)
				case specs.OpGreaterEqual:
					jump(opJge, lo, pass, fail)
				case specs.OpLessThan:
					jump(opJge, lo, fail, pass)
				case specs.OpLessEqual:
					jump(opJgt, lo, fail, pass)
				}
			default:
				return nil, fmt.Errorf("operator %q not supported", c.op)
			}
			labels[pass] = len(out)
		}
		emit(Instruction{Code: opRet, K: act})
		if fail != reload {
			labels[fail] = len(out)
		}
	}
	labels[reload] = len(out)
	emit(Instruction{Code: opLdAbsW, K: offNr})
	for _, j := range jumps {
		for _, p := range []struct {
			l   int
			dst *uint8
		}{{j.tl, &out[j.at].Jt}, {j.fl, &out[j.at].Jf}} {
			if p.l < 0 {
				continue
			}
			d := labels[p.l] - j.at - 1
			if d < 0 || d > 255 {
				return nil, fmt.Errorf("jump offset %d out of range", d)
			}
			*p.dst = uint8(d)
		}
	}
	return out, nil
}

func action(a specs.LinuxSeccompAction, errnoRet *uint) (uint32, error) {
	errno := uint(unix.EPERM)
	if errnoRet != nil {
		errno = *errnoRet
	}
	if errno > 0xffff {
		return 0, fmt.Errorf("errno %d out of range", errno)
	}
	switch a {
	case specs.ActAllow:
		return retAllow, nil
	case specs.ActErrno:
		return retErrno | uint32(errno), nil
	case specs.ActKill, specs.ActKillThread:
		return retKillThread, nil
	case specs.ActKillProcess:
		return retKillProcess, nil
	case specs.ActTrap:
		return retTrap, nil
	case specs.ActLog:
		return retLog, nil
	case specs.ActTrace:
		return retTrace | uint32(errno), nil
	default:
		return 0, fmt.Errorf("action %q not supported", a)
	}
}

type cond struct {
	arg           uint
	op            specs.LinuxSeccompOperator
	value, value2 uint64
}

// conditions follows runc: when every argument rule names a different
// argument index they are ANDed into one condition set; otherwise each rule
// is its own set and the sets are ORed.
func conditions(args []specs.LinuxSeccompArg) ([][]cond, error) {
	if len(args) == 0 {
		return nil, nil
	}
	var conds []cond
	seen := map[uint]bool{}
	distinct := true
	for _, a := range args {
		if a.Index > 5 {
			return nil, fmt.Errorf("argument index %d out of range", a.Index)
		}
		switch a.Op {
		case specs.OpEqualTo, specs.OpNotEqual, specs.OpMaskedEqual, specs.OpGreaterThan,
			specs.OpGreaterEqual, specs.OpLessThan, specs.OpLessEqual:
		default:
			return nil, fmt.Errorf("operator %q not supported", a.Op)
		}
		if seen[a.Index] {
			distinct = false
		}
		seen[a.Index] = true
		conds = append(conds, cond{arg: a.Index, op: a.Op, value: a.Value, value2: a.ValueTwo})
	}
	if distinct {
		return [][]cond{conds}, nil
	}
	out := make([][]cond, 0, len(conds))
	for _, c := range conds {
		out = append(out, []cond{c})
	}
	return out, nil
}

// Load installs prog on the calling thread (no TSYNC: the stage execs from
// this thread). Without CAP_SYS_ADMIN the thread needs no_new_privs first.
func Load(prog *Program) error {
	if prog == nil || len(prog.Instructions) == 0 {
		return errors.New("seccomp: empty program")
	}
	fprog := unix.SockFprog{Len: uint16(len(prog.Instructions)), Filter: &prog.Instructions[0]}
	_, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, uintptr(prog.Flags), uintptr(unsafe.Pointer(&fprog)))
	if e != 0 {
		return fmt.Errorf("seccomp(SET_MODE_FILTER): %w", e)
	}
	return nil
}
