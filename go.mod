module cairn.dev/cairn

go 1.26.0

require (
	github.com/containerd/go-dmverity v0.1.0
	github.com/diskfs/go-diskfs v1.9.4
	github.com/erofs/go-erofs v0.3.1
	github.com/google/uuid v1.6.0
	github.com/klauspost/compress v1.20.3
	github.com/ulikunitz/xz v0.5.15
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/sys v0.49.0
)
