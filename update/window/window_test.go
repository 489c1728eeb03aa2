package window

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in, want string // want "" = error
	}{
		{"Sat,Sun 02:00-04:00", "Sat,Sun 02:00-04:00"},
		{"sat,SUN 02:00-04:00", "Sat,Sun 02:00-04:00"},
		{"sat 02:00-04:00", "Sat 02:00-04:00"},
		{"Mon-Fri 23:30-00:30", "Mon,Tue,Wed,Thu,Fri 23:30-00:30"},
		{"Fri-Mon 01:00-02:00", "Mon,Fri,Sat,Sun 01:00-02:00"},
		{"03:00-03:15", "03:00-03:15"},
		{"  Sun   00:00-23:59 ", "Sun 00:00-23:59"},
		{"Mon-Sun 00:00-01:00", "00:00-01:00"},
		{"", ""},
		{"Sat", ""},
		{"02:00", ""},
		{"Sat 02:00", ""},
		{"02:00-02:00", ""},
		{"24:00-01:00", ""},
		{"01:60-02:00", ""},
		{"2:00-3:00", ""},
		{"Sat 2:00-4:00", ""},
		{"Sat 02:00-24:00", ""},
		{"Sat 02:60-03:00", ""},
		{"Sat 02:00-02:00", ""},
		{"Sat,,Sun 02:00-04:00", ""},
		{"Sat, Sun 02:00-03:00", ""},
		{"Sam 02:00-03:00", ""},
		{"Caturday 02:00-04:00", ""},
		{"Sat-Sun-Mon 02:00-04:00", ""},
		{"Mon-Fri-Sat 01:00-02:00", ""},
		{"Sat 02:00-04:00 extra", ""},
		{"Sat 02:00-04:00 x", ""},
		{"Sat 0x:00-04:00", ""},
		{"Sat 02:00--04:00", ""},
		{"Sat 02:00-04:00-05:00", ""},
		{"Sat\x0002:00-04:00", ""},
		{"Sat ０２:00-04:00", ""},
		{strings.Repeat("Sat,", 40) + "Sun 02:00-04:00", ""},
		{strings.Repeat("Mon,", 40) + "Mon 01:00-02:00", ""},
	}
	for _, tt := range tests {
		w, err := Parse(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("%q: accepted as %v", tt.in, w)
			}
			continue
		}
		if err != nil || w.String() != tt.want {
			t.Errorf("%q: %q %v, want %q", tt.in, w.String(), err, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for in, want := range map[string]string{
		"Sat 2:00-4:00":                    `"Sat 2:00-4:00": "2:00-4:00" is not HH:MM-HH:MM`,
		"Sam 02:00-04:00":                  `"Sam 02:00-04:00": "Sam" is not a day or range of days such as Sat or Mon-Fri`,
		"Sat-Sun-Mon 02:00-04:00":          `"Sat-Sun-Mon 02:00-04:00": "Sat-Sun-Mon" is not a day or range of days such as Sat or Mon-Fri`,
		"02:00-02:00":                      `"02:00-02:00" is empty (it starts when it ends)`,
		"someday":                          `"someday": "someday" is not HH:MM-HH:MM`,
		"a b c":                            `"a b c" is not "[DAYS ]HH:MM-HH:MM" such as "Sat,Sun 02:00-04:00"`,
		strings.Repeat("Mon,", 40) + "Mon": "163 bytes, at most 128",
	} {
		if _, err := Parse(in); err == nil || err.Error() != want {
			t.Errorf("Parse(%q) = %v, want %s", in, err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"Sat,Sun 02:00-04:00", "Mon-Fri 23:30-00:30", "03:00-03:15", "Fri-Mon 01:00-02:00", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := Parse(s)
		if err != nil {
			return
		}
		if w.Start == w.End || w.Start < 0 || w.Start >= 1440 || w.End < 0 || w.End >= 1440 || w.Days == [7]bool{} {
			t.Fatalf("%q: accepted as %+v", s, w)
		}
		// What parses prints back to something that parses the same.
		w2, err := Parse(w.String())
		if err != nil || w2 != w {
			t.Fatalf("%q -> %q -> %v %v", s, w.String(), w2, err)
		}
	})
}
