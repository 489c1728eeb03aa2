package verity

import "testing"

func TestTable(t *testing.T) {
	p := Params{Device: "/dev/vda2", DataBlocks: 100, RootHash: "ABcd", Salt: "00ff"}
	got, err := p.Table()
	if err != nil {
		t.Fatal(err)
	}
	if want := "1 /dev/vda2 /dev/vda2 4096 4096 100 100 sha256 abcd 00ff 1 restart_on_corruption"; got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	p.Salt = ""
	if got, _ := p.Table(); got != "1 /dev/vda2 /dev/vda2 4096 4096 100 100 sha256 abcd - 1 restart_on_corruption" {
		t.Fatalf("no salt: %q", got)
	}
	for _, bad := range []Params{
		{Device: "/dev/x", DataBlocks: 1, RootHash: ""},
		{Device: "/dev/x", DataBlocks: 1, RootHash: "zz"},
		{Device: "/dev/x", DataBlocks: 1, RootHash: "aa", Salt: "z"},
		{Device: "/dev/x", DataBlocks: 0, RootHash: "aa"},
		{Device: "", DataBlocks: 1, RootHash: "aa"},
	} {
		if _, err := bad.Table(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
