package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"cairn.dev/cairn/bench/peer"
)

// withProbe returns the OS file src with the benchmark's meminfo container
// (peer.Containers, the one besides the web example) added as a service, as
// the peer runs it. The name stays that of src (the image is named after
// it).
func withProbe(src []byte, file string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: want a mapping at the top", file)
	}
	top := doc.Content[0]
	var services *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "services" {
			services = top.Content[i+1]
		}
	}
	if services == nil {
		services = &yaml.Node{Kind: yaml.MappingNode}
		top.Content = append(top.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "services"}, services)
	}
	if services.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: field services: want a mapping", file, services.Line)
	}
	for _, c := range peer.Containers[1:] {
		for i := 0; i+1 < len(services.Content); i += 2 {
			if services.Content[i].Value == c.Name {
				return nil, fmt.Errorf("%s:%d: services.%s: already defined (the benchmark adds it)", file, services.Content[i].Line, c.Name)
			}
		}
		svc := map[string]any{
			"image":   "go://" + c.Pkg,
			"command": c.Args,
			"ports":   []string{fmt.Sprintf("%d:%d", c.Port, c.Port)},
		}
		var n yaml.Node
		if err := n.Encode(svc); err != nil {
			return nil, fmt.Errorf("encode service %s: %w", c.Name, err)
		}
		services.Content = append(services.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: c.Name}, &n)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return out, nil
}

// writeProbeOS writes osFile with the probe added next to it (the go://
// packages resolve from the module root, so any directory in the module
// works) and returns its path.
func writeProbeOS(osFile, dir string) (string, error) {
	src, err := os.ReadFile(osFile)
	if err != nil {
		return "", fmt.Errorf("OS file: %w", err)
	}
	b, err := withProbe(src, osFile)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("OS file: %w", err)
	}
	p := filepath.Join(dir, strings.TrimSuffix(filepath.Base(osFile), filepath.Ext(osFile))+".yaml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return "", fmt.Errorf("OS file: %w", err)
	}
	return p, nil
}
