package cmdline

import (
	"reflect"
	"strings"
	"testing"
)

const good = `console=ttyS0 panic=1 quiet cairn.slot=A cairn.version=1.0.0 cairn.root=PARTUUID=0FC63DAF-8483-4772-8E79-3D69D8477DE4 cairn.verity.roothash=ABCDEF01 cairn.verity.salt=00ff cairn.verity.blocks=1234 foo="a b" -- init-arg cairn.slot=B`

func TestParse(t *testing.T) {
	p, err := Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ValidateRoot(); err != nil {
		t.Fatal(err)
	}
	want := Params{Slot: "A", Version: "1.0.0", RootPARTUUID: "0fc63daf-8483-4772-8e79-3d69d8477de4",
		VerityRootHash: "abcdef01", VeritySalt: "00ff", VerityBlocks: 1234}
	got := *p
	got.Args = nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if p.Args["foo"] != "a b" || p.Args["quiet"] != "" {
		t.Fatalf("args: %v", p.Args)
	}
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  a  b\tc\n", []string{"a", "b", "c"}},
		{`x="1 2" "y z"`, []string{"x=1 2", "y z"}},
		{`""`, []string{""}},
		{`a="unterminated b`, []string{"a=unterminated b"}},
	} {
		if got := Split(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Split(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		"cairn.root=/dev/vda2",
		"cairn.root=PARTUUID=xyz",
		"cairn.root=PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de",
		"cairn.root=PARTUUID=0fc63daf+8483-4772-8e79-3d69d8477de4",
		"cairn.verity.roothash=abc",
		"cairn.verity.roothash=zz",
		"cairn.verity.roothash=",
		"cairn.verity.salt=0",
		"cairn.verity.blocks=-1",
		"cairn.verity.blocks=0",
		"cairn.verity.blocks=99999999999999999999",
		strings.Repeat("a", maxLen+1),
	} {
		if _, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) succeeded", in)
		}
	}
}

func TestValidateRoot(t *testing.T) {
	for _, in := range []string{
		"",
		"cairn.slot=C cairn.version=1 cairn.root=PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de4 cairn.verity.roothash=aa cairn.verity.blocks=1",
		"cairn.slot=A cairn.root=PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de4 cairn.verity.roothash=aa cairn.verity.blocks=1",
		"cairn.slot=A cairn.version=1 cairn.verity.roothash=aa cairn.verity.blocks=1",
		"cairn.slot=A cairn.version=1 cairn.root=PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de4 cairn.verity.blocks=1",
		"cairn.slot=A cairn.version=1 cairn.root=PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de4 cairn.verity.roothash=aa",
	} {
		p, err := Parse(in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		if err := p.ValidateRoot(); err == nil {
			t.Errorf("ValidateRoot(%q) succeeded", in)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(good)
	f.Add(`a="b c`)
	f.Add("cairn.root=PARTUUID=")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		if p.RootPARTUUID != "" && !validUUID(p.RootPARTUUID) {
			t.Fatalf("accepted bad uuid %q", p.RootPARTUUID)
		}
		if p.VerityRootHash != "" && validHex(p.VerityRootHash, 1) != nil {
			t.Fatalf("accepted bad hash %q", p.VerityRootHash)
		}
		_ = p.ValidateRoot()
	})
}
