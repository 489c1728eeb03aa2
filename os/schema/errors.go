package schema

import (
	"fmt"
	"strings"
)

// Error is one problem found in an OS file. It names the file, the position
// (1-based line and column; 0 when the problem is about the whole file) and
// the dotted path of the field, such as "kernel.modules[2]".
type Error struct {
	File   string
	Line   int
	Column int
	Field  string
	Msg    string
}

func (e Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one OS file, in the order of the file.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}
