package qemu

import (
	"slices"
	"strings"
	"testing"
)

func TestParsePortForward(t *testing.T) {
	tests := []struct {
		in      string
		want    PortForward
		wantErr string
	}{
		{"8080:80", PortForward{8080, 80}, ""},
		{"1:65535", PortForward{1, 65535}, ""},
		{"8080", PortForward{}, "want HOSTPORT:GUESTPORT"},
		{"", PortForward{}, "want HOSTPORT:GUESTPORT"},
		{":80", PortForward{}, "host port: empty"},
		{"80:", PortForward{}, "guest port: empty"},
		{"0:80", PortForward{}, "not in 1..65535"},
		{"65536:80", PortForward{}, "not in 1..65535"},
		{"-1:80", PortForward{}, "not a decimal number"},
		{"+80:80", PortForward{}, "not a decimal number"},
		{"80:80:80", PortForward{}, "not a decimal number"},
		{"tcp:80", PortForward{}, "not a decimal number"},
		{" 80:80", PortForward{}, "not a decimal number"},
		{"99999999999999999999:1", PortForward{}, "not in 1..65535"},
	}
	for _, tt := range tests {
		got, err := ParsePortForward(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParsePortForward(%q) error = %v, want containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParsePortForward(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		if got.String() != tt.in {
			t.Errorf("String() = %q, want %q", got.String(), tt.in)
		}
	}
}

func FuzzParsePortForward(f *testing.F) {
	for _, s := range []string{"8080:80", "0:0", ":", "1:1:1", "65535:65535"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePortForward(s)
		if err != nil {
			return
		}
		if p.Host == 0 || p.Guest == 0 {
			t.Fatalf("accepted zero port from %q", s)
		}
		if q, err := ParsePortForward(p.String()); err != nil || q != p {
			t.Fatalf("round trip of %q: %v %v", s, q, err)
		}
	})
}

func TestArgs(t *testing.T) {
	common := []string{
		"-machine", "q35", "-accel", "tcg", "-m", "512M", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
	}
	ovmf := BootFiles{OVMFCode: "/fw/CODE.fd", OVMFVars: "/tmp/vm/VARS.fd"}
	pflash := []string{
		"-drive", "if=pflash,format=raw,unit=0,file=/fw/CODE.fd,readonly=on",
		"-drive", "if=pflash,format=raw,unit=1,file=/tmp/vm/VARS.fd",
	}
	net := []string{"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile=", "-device", "virtio-rng-pci"}
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }

	tests := []struct {
		name    string
		cfg     Config
		boot    BootFiles
		want    []string
		wantErr string
	}{
		{
			name: "ovmf",
			cfg:  Config{Image: "/img/disk.raw"},
			boot: ovmf,
			want: cat(common, pflash,
				[]string{"-drive", "if=none,id=d0,file=/img/disk.raw,format=raw", "-device", "virtio-blk-pci,drive=d0,bootindex=1"},
				net),
		},
		{
			name: "direct",
			cfg:  Config{Image: "/img/disk.raw", Direct: true, Mem: "1G"},
			boot: BootFiles{Kernel: "/t/vmlinuz", Initrd: "/t/initrd", Append: "console=ttyS0 panic=1"},
			want: cat(
				[]string{"-machine", "q35", "-accel", "tcg", "-m", "1G", "-smp", "1",
					"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio"},
				[]string{"-kernel", "/t/vmlinuz", "-initrd", "/t/initrd", "-append", "console=ttyS0 panic=1"},
				[]string{"-drive", "if=none,id=d0,file=/img/disk.raw,format=raw", "-device", "virtio-blk-pci,drive=d0"},
				net),
		},
		{
			name: "ports fwcfg qmp noreboot snapshot extra",
			cfg: Config{
				Image: "/img/disk.raw", Ports: []PortForward{{8080, 80}, {2222, 22}},
				FwCfgFile: "/etc/cfg.yaml", QMPSocket: "/run/q.sock", NoReboot: true, Snapshot: true,
				ExtraArgs: []string{"-cpu", "max"},
			},
			boot: ovmf,
			want: cat(common, pflash,
				[]string{"-drive", "if=none,id=d0,file=/img/disk.raw,format=raw,snapshot=on", "-device", "virtio-blk-pci,drive=d0,bootindex=1"},
				[]string{"-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:2222-:22",
					"-device", "virtio-net-pci,netdev=n0,romfile=", "-device", "virtio-rng-pci"},
				[]string{"-fw_cfg", "name=opt/dev.cairn/config,file=/etc/cfg.yaml"},
				[]string{"-qmp", "unix:/run/q.sock,server=on,wait=off"},
				[]string{"-no-reboot", "-cpu", "max"}),
		},
		{
			name: "kernel only, no disk",
			cfg:  Config{Kernel: "/k/vmlinuz", Append: "panic=-1", NoReboot: true},
			boot: BootFiles{Kernel: "/k/vmlinuz", Append: "panic=-1"},
			want: cat(common, []string{"-kernel", "/k/vmlinuz", "-append", "panic=-1"}, net, []string{"-no-reboot"}),
		},
		{
			name: "kernel through the firmware",
			cfg:  Config{Image: "/img/disk.raw", Kernel: "/k/vmlinuz", Initrd: "/k/initrd", Append: "quiet", KernelViaFirmware: true, Snapshot: true},
			boot: BootFiles{Kernel: "/k/vmlinuz", Initrd: "/k/initrd", Append: "quiet", OVMFCode: "/fw/CODE.fd", OVMFVars: "/tmp/vm/VARS.fd"},
			want: cat(common, []string{"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd", "-append", "quiet"}, pflash,
				[]string{"-drive", "if=none,id=d0,file=/img/disk.raw,format=raw,snapshot=on", "-device", "virtio-blk-pci,drive=d0"},
				net),
		},
		{name: "kernel through the firmware without it", cfg: Config{Kernel: "/k/vmlinuz", KernelViaFirmware: true}, boot: BootFiles{Kernel: "/k/vmlinuz"}, wantErr: "without OVMF"},
		{
			name: "qcow2 overlay",
			cfg:  Config{Image: "/t/overlay.qcow2", ImageFormat: "qcow2"},
			boot: ovmf,
			want: cat(common, pflash,
				[]string{"-drive", "if=none,id=d0,file=/t/overlay.qcow2,format=qcow2", "-device", "virtio-blk-pci,drive=d0,bootindex=1"},
				net),
		},
		{name: "no image", cfg: Config{}, boot: ovmf, wantErr: "no image"},
		{name: "uefi without firmware", cfg: Config{Image: "/a"}, wantErr: "without OVMF"},
		{name: "direct without kernel", cfg: Config{Image: "/a", Direct: true}, wantErr: "without a kernel"},
		{name: "direct qcow2", cfg: Config{Image: "/a", Direct: true, ImageFormat: "qcow2"}, wantErr: "needs a raw image"},
		{name: "bad format", cfg: Config{Image: "/a", ImageFormat: "vmdk"}, boot: ovmf, wantErr: "unsupported image format"},
		{
			name: "commas escaped",
			cfg:  Config{Image: "/t/a,b.img", FwCfgFile: "x,file=/etc/shadow", QMPSocket: "/t/q,s"},
			boot: BootFiles{OVMFCode: "/fw/C,ODE.fd", OVMFVars: "/t/V,ARS.fd"},
			want: cat(common,
				[]string{"-drive", "if=pflash,format=raw,unit=0,file=/fw/C,,ODE.fd,readonly=on",
					"-drive", "if=pflash,format=raw,unit=1,file=/t/V,,ARS.fd"},
				[]string{"-drive", "if=none,id=d0,file=/t/a,,b.img,format=raw", "-device", "virtio-blk-pci,drive=d0,bootindex=1"},
				net,
				[]string{"-fw_cfg", "name=opt/dev.cairn/config,file=x,,file=/etc/shadow"},
				[]string{"-qmp", "unix:/t/q,,s,server=on,wait=off"}),
		},
		{name: "duplicate host port", cfg: Config{Image: "/a", Ports: []PortForward{{80, 80}, {80, 81}}}, boot: ovmf, wantErr: "forwarded twice"},
		{name: "zero port", cfg: Config{Image: "/a", Ports: []PortForward{{0, 80}}}, boot: ovmf, wantErr: "invalid port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.Args(tt.boot)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("args mismatch\n got: %q\nwant: %q", got, tt.want)
			}
		})
	}
}
