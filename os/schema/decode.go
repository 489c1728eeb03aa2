package schema

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// errSyntax marks an UnmarshalText error that only says the text is not of
// the expected form; the decoder then reports "expected X, got Y".
var errSyntax = errors.New("syntax")

// maxAliasDepth bounds alias chains so that hostile input cannot recurse
// without end.
const maxAliasDepth = 32

// decoder turns a YAML node tree into Go values, reporting every unknown
// field and every value of the wrong kind with its position. It records the
// node of each field path so that later validation can point at it too.
type decoder struct {
	file  string
	errs  Errors
	nodes map[string]*yaml.Node
	// keys are the key nodes of mapping entries, by path, for errors about
	// a name (a service's) rather than its value.
	keys map[string]*yaml.Node
}

// sorted returns the errors ordered by position (problems with the whole
// file first), keeping the order of equal positions.
func (d *decoder) sorted() Errors {
	sort.SliceStable(d.errs, func(i, j int) bool {
		a, b := d.errs[i], d.errs[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return d.errs
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	e := Error{File: d.file, Field: path, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	d.errs = append(d.errs, e)
}

var (
	nodeType       = reflect.TypeFor[yaml.Node]()
	stringListType = reflect.TypeFor[StringList]()
	envType        = reflect.TypeFor[Env]()
	dependsOnType  = reflect.TypeFor[DependsOn]()
)

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind == yaml.AliasNode {
		if depth > maxAliasDepth || n.Alias == nil {
			d.errorf(n, path, "alias nested too deeply")
			return
		}
		d.decode(n.Alias, v, path, depth+1)
		return
	}
	d.nodes[path] = n
	if v.Type() == nodeType {
		v.Set(reflect.ValueOf(*n))
		return
	}
	if isNull(n) {
		return // leave the zero value: the field counts as absent
	}
	switch v.Type() {
	case stringListType:
		d.stringList(n, v, path)
		return
	case envType:
		d.env(n, v, path)
		return
	case dependsOnType:
		d.dependsOn(n, v, path, depth)
		return
	}
	if v.CanAddr() {
		if _, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
			d.scalar(n, v, path)
			return
		}
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path, depth)
	case reflect.Struct:
		d.structure(n, v, path, depth)
	case reflect.Map:
		d.mapping(n, v, path, depth)
	case reflect.Slice:
		d.sequence(n, v, path, depth)
	default:
		d.scalar(n, v, path)
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping of fields, got %s", describe(n))
		return
	}
	fields := map[string]int{}
	var names []string
	t := v.Type()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = i
		names = append(names, name)
	}
	sort.Strings(names)
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := k.Value
		sub := join(path, key)
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "field names must be plain strings")
			continue
		}
		idx, ok := fields[key]
		if !ok {
			d.errorf(k, sub, "unknown field (known fields: %s)", strings.Join(names, ", "))
			continue
		}
		if seen[key] {
			d.errorf(k, sub, "field given twice")
			continue
		}
		seen[key] = true
		d.decode(val, v.Field(idx), sub, depth)
	}
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got %s", describe(n))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "keys must be plain strings")
			continue
		}
		sub := join(path, k.Value)
		if d.keys != nil {
			d.keys[sub] = k
		}
		key := reflect.ValueOf(k.Value)
		if v.MapIndex(key).IsValid() {
			d.errorf(k, sub, "key given twice")
			continue
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, elem, sub, depth)
		v.SetMapIndex(key, elem)
	}
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "expected a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), depth)
	}
	v.Set(s)
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected %s, got %s", kindName(v), describe(n))
		return
	}
	// Strings take any scalar as written, so that "version: 1.10" stays
	// "1.10" and is not read as the number 1.1.
	if v.Kind() == reflect.String && !isTextUnmarshaler(v) {
		v.SetString(n.Value)
		return
	}
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		// Called directly rather than through yaml.v3, so that "30" (an
		// integer to YAML) reaches the type's own check and message.
		if err := u.UnmarshalText([]byte(n.Value)); err != nil {
			e, ok := u.(interface{ expectation() string })
			switch {
			case ok && errors.Is(err, errSyntax):
				d.errorf(n, path, "expected %s, got %q", e.expectation(), n.Value)
			case ok:
				d.errorf(n, path, "expected %s, got %q: %s", e.expectation(), n.Value, err)
			default:
				d.errorf(n, path, "invalid value %q: %s", n.Value, err)
			}
		}
		return
	}
	if (v.Kind() == reflect.Float64 || v.Kind() == reflect.Float32) && n.ShortTag() == "!!str" {
		// Compose writes cpus quoted ("0.50"); accept a quoted decimal.
		f, err := strconv.ParseFloat(strings.TrimSpace(n.Value), v.Type().Bits())
		if err != nil || strings.ContainsAny(n.Value, "xXpP_") {
			d.errorf(n, path, "expected %s, got %q", kindName(v), n.Value)
			return
		}
		v.SetFloat(f)
		return
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		d.errorf(n, path, "expected %s, got %q: %s", kindName(v), n.Value, cleanYAMLError(err))
	}
}

func isTextUnmarshaler(v reflect.Value) bool {
	_, ok := v.Addr().Interface().(encoding.TextUnmarshaler)
	return ok
}

// cleanYAMLError drops the "yaml: [unmarshal errors:\n  ][line N: ]" prefix
// of a yaml.v3 error; the position is reported separately.
func cleanYAMLError(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(s, "unmarshal errors:\n"); ok {
		s = strings.TrimLeft(rest, " \t\n")
	}
	if rest, ok := strings.CutPrefix(s, "line "); ok {
		digits := len(rest) - len(strings.TrimLeft(rest, "0123456789"))
		if digits > 0 && strings.HasPrefix(rest[digits:], ": ") {
			s = rest[digits+2:]
		}
	}
	return s
}

func kindName(v reflect.Value) string {
	switch v.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a " + v.Type().String()
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "a document"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// stringList decodes a command: a list of strings, or one string split on
// white space as Compose does. An empty list or string is kept as an empty,
// non-nil list: it overrides the image's value with nothing.
func (d *decoder) stringList(n *yaml.Node, v reflect.Value, path string) {
	var out StringList
	switch n.Kind {
	case yaml.ScalarNode:
		out = StringList(strings.Fields(n.Value))
	case yaml.SequenceNode:
		out = make(StringList, 0, len(n.Content))
		for i, item := range n.Content {
			sub := fmt.Sprintf("%s[%d]", path, i)
			d.nodes[sub] = item
			if item.Kind != yaml.ScalarNode || isNull(item) {
				d.errorf(item, sub, "expected a string, got %s", describe(item))
				continue
			}
			out = append(out, item.Value)
		}
	default:
		d.errorf(n, path, "expected a list of strings or a string, got %s", describe(n))
		return
	}
	if out == nil {
		out = StringList{}
	}
	for i, s := range out {
		if strings.IndexByte(s, 0) >= 0 {
			d.errorf(n, fmt.Sprintf("%s[%d]", path, i), "contains a NUL byte")
		}
	}
	v.Set(reflect.ValueOf(out))
}

// env decodes an environment: a mapping of names to scalars (numbers and
// booleans are kept as written), or a list of "KEY=VALUE".
func (d *decoder) env(n *yaml.Node, v reflect.Value, path string) {
	out := Env{}
	add := func(at *yaml.Node, key, val string) {
		sub := join(path, key)
		d.nodes[sub] = at
		switch {
		case !validEnvName(key):
			d.errorf(at, sub, "%q is not a variable name (printable characters other than '=' and space)", key)
		case strings.IndexByte(val, 0) >= 0:
			d.errorf(at, sub, "the value contains a NUL byte")
		default:
			if _, dup := out[key]; dup {
				d.errorf(at, sub, "variable given twice")
				return
			}
			out[key] = val
		}
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				d.errorf(k, path, "keys must be plain strings")
				continue
			}
			if val.Kind == yaml.AliasNode && val.Alias != nil {
				val = val.Alias
			}
			switch {
			case isNull(val):
				d.errorf(val, join(path, k.Value), "no value: a variable is not taken from the build machine's environment; write \"\" for an empty value")
			case val.Kind != yaml.ScalarNode:
				d.errorf(val, join(path, k.Value), "expected a string, got %s", describe(val))
			default:
				add(k, k.Value, val.Value)
			}
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			sub := fmt.Sprintf("%s[%d]", path, i)
			if item.Kind != yaml.ScalarNode || isNull(item) {
				d.errorf(item, sub, "expected \"KEY=VALUE\", got %s", describe(item))
				continue
			}
			key, val, ok := strings.Cut(item.Value, "=")
			if !ok {
				d.errorf(item, sub, "%q has no '=': a variable is not taken from the build machine's environment; write \"%s=\" for an empty value", item.Value, item.Value)
				continue
			}
			add(item, key, val)
		}
	default:
		d.errorf(n, path, "expected a mapping or a list of \"KEY=VALUE\", got %s", describe(n))
		return
	}
	v.Set(reflect.ValueOf(out))
}

// dependsOn decodes a list of service names (condition service_started) or
// a mapping of names to {condition: ...}.
func (d *decoder) dependsOn(n *yaml.Node, v reflect.Value, path string, depth int) {
	out := DependsOn{}
	switch n.Kind {
	case yaml.SequenceNode:
		for i, item := range n.Content {
			sub := fmt.Sprintf("%s[%d]", path, i)
			if item.Kind != yaml.ScalarNode || isNull(item) {
				d.errorf(item, sub, "expected a service name, got %s", describe(item))
				continue
			}
			d.nodes[join(path, item.Value)] = item
			if _, dup := out[item.Value]; dup {
				d.errorf(item, sub, "%q given twice", item.Value)
				continue
			}
			out[item.Value] = Dependency{Condition: ConditionStarted}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				d.errorf(k, path, "keys must be plain strings")
				continue
			}
			sub := join(path, k.Value)
			if _, dup := out[k.Value]; dup {
				d.errorf(k, sub, "key given twice")
				continue
			}
			var dep Dependency
			d.decode(val, reflect.ValueOf(&dep).Elem(), sub, depth)
			d.nodes[sub] = k
			if dep.Condition == "" {
				dep.Condition = ConditionStarted
			}
			out[k.Value] = dep
		}
	default:
		d.errorf(n, path, "expected a list of service names or a mapping, got %s", describe(n))
		return
	}
	v.Set(reflect.ValueOf(out))
}

// validEnvName: 1-256 printable ASCII bytes other than '=' and space (as
// Docker, names such as "spring.profiles.active" are allowed).
func validEnvName(s string) bool {
	return len(s) >= 1 && len(s) <= 256 && allOf(s, func(c byte) bool { return c > ' ' && c < 0x7f && c != '=' })
}
