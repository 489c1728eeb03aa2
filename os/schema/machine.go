package schema

import (
	"fmt"
	"reflect"
	"strings"
)

// LoadMachine reads, parses and validates the machine config at path.
func LoadMachine(path string) (*Machine, error) {
	data, err := readFile(path, "machine config")
	if err != nil {
		return nil, err
	}
	return ParseMachine(path, data)
}

// ParseMachine parses and validates a machine config held in memory: the
// machine-level subset of the OS file (hostname, network, services, files).
// name is used in error messages. Services default to pull_policy
// "missing"; whether an image only the build can make (go://, oci-layout:,
// docker-archive:, or pull_policy build) is baked into the OS image is
// checked by OS.Merge. The error, if any, is of type Errors.
func ParseMachine(name string, data []byte) (*Machine, error) {
	m := &Machine{Source: name}
	nodes, err := parseDoc(name, data, m, func(d *decoder) { validateMachine(m, d) })
	if err != nil {
		return nil, err
	}
	m.nodes = nodes
	return m, nil
}

func validateMachine(m *Machine, d *decoder) {
	if m.Hostname != "" && !validHostname(m.Hostname) {
		d.bad("hostname", "%q is not a valid host name (dot-separated labels of letters, digits and dashes, at most 64 characters)", m.Hostname)
	}
	validateNetwork(m.Network, d)
	validateServices(m.Services, d, true)
	seen := map[string]int{}
	for i := range m.Files {
		f := &m.Files[i]
		field := fmt.Sprintf("files[%d]", i)
		validateFile(f, field, seen, i, d.bad)
		if f.Path != "" && !strings.HasPrefix(f.Path, "/etc/") && underRoots(f.Path) {
			d.bad(field+".path", "%q: a machine config may only write files under /etc/ (the generated /etc); /usr and /opt are the read-only root", f.Path)
		}
		if f.Source != "" {
			d.bad(field+".source", "a machine config carries its files' content: use content, not source")
		}
	}
}

// Merge returns a deep copy of o with the machine config m applied:
// hostname and network replaced when m sets them, services added or
// replaced by name, files replaced by path or appended. It then checks what
// concerns several services again (depends_on names and cycles, host port
// conflicts) and the images of m's services: an image that only the build
// can make (go://, oci-layout:, docker-archive:, or pull_policy build) must
// be one that the OS file's services or onboot already bake into the image;
// such a service then gets pull_policy build unless m sets another. o is not
// changed. The error is of type Errors, naming m's file and positions for
// m's services and o's for the others.
func (o *OS) Merge(m *Machine) (*OS, error) {
	out := deepCopy(o)
	if m == nil {
		return out, nil
	}
	mm := deepCopy(m)
	var errs Errors
	fromMachine := func(field string) bool {
		rest, ok := strings.CutPrefix(field, "services.")
		if !ok {
			return false
		}
		name := rest
		if i := strings.IndexAny(rest, ".["); i >= 0 {
			name = rest[:i]
		}
		_, ok = mm.Services[name]
		return ok
	}
	// bad reports a problem at its position in m's file or in o's.
	bad := func(field, format string, args ...any) {
		d := &decoder{file: o.Source, nodes: o.nodes}
		if fromMachine(field) {
			d = &decoder{file: mm.Source, nodes: mm.nodes}
		}
		d.bad(field, format, args...)
		errs = append(errs, d.errs...)
	}

	if mm.Hostname != "" {
		out.Hostname = mm.Hostname
	}
	if mm.Network != nil {
		out.Network = mm.Network
	}

	baked := map[string]bool{}
	for _, s := range o.Services {
		if s.PullPolicy == PullBuild {
			baked[s.Image] = true
		}
	}
	for _, b := range o.Onboot {
		if b.PullPolicy == PullBuild {
			baked[b.Image] = true
		}
	}
	if out.Services == nil && len(mm.Services) > 0 {
		out.Services = map[string]Service{}
	}
	for _, n := range sortedKeys(mm.Services) {
		s := mm.Services[n]
		f := "services." + n
		kind, _ := ImageKind(s.Image)
		_, pullGiven := mm.nodes[f+".pull_policy"]
		buildOnly := kind != ImageRegistry || pullGiven && s.PullPolicy == PullBuild
		switch {
		case buildOnly && !baked[s.Image]:
			bad(f+".image", "%q is made at build time, and the OS image does not carry it: a machine config may only use a registry image, or one of the OS file's build images (%s)", s.Image, strings.Join(sortedKeys(baked), ", "))
		case kind != ImageRegistry && pullGiven && s.PullPolicy != PullBuild:
			bad(f+".pull_policy", "%s: images are made at build time; only pull_policy build is possible", kind)
		case baked[s.Image] && !pullGiven:
			s.PullPolicy = PullBuild
		}
		for _, b := range o.Onboot {
			if b.Name == n {
				bad(f, "%q is already the name of an onboot container of the OS file", n)
			}
		}
		out.Services[n] = s
	}
	for _, mf := range mm.Files {
		replaced := false
		for j := range out.Files {
			if out.Files[j].Path == mf.Path {
				out.Files[j] = mf
				replaced = true
				break
			}
		}
		if !replaced {
			out.Files = append(out.Files, mf)
		}
	}
	crossCheck(out.Services, bad)
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// deepCopy copies v and everything it points to, exported or not (the
// unexported node maps are shared: they are never changed after parsing).
func deepCopy[T any](v *T) *T {
	c := copyValue(reflect.ValueOf(v).Elem())
	out := c.Interface().(T)
	return &out
}

func copyValue(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		p := reflect.New(v.Type().Elem())
		p.Elem().Set(copyValue(v.Elem()))
		return p
	case reflect.Map:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		m := reflect.MakeMapWithSize(v.Type(), v.Len())
		iter := v.MapRange()
		for iter.Next() {
			m.SetMapIndex(iter.Key(), copyValue(iter.Value()))
		}
		return m
	case reflect.Slice:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			s.Index(i).Set(copyValue(v.Index(i)))
		}
		return s
	case reflect.Struct:
		s := reflect.New(v.Type()).Elem()
		s.Set(v)
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				s.Field(i).Set(copyValue(v.Field(i)))
			}
		}
		return s
	}
	return v
}
