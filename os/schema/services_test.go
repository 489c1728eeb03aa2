package schema

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const servicesOS = `name: web
version: "1"
services:
  web:
    image: go://./os/examples/hello-web
    command: /hello-web -listen :8080
    entrypoint: []
    environment: {GREETING: hi, N: 3, B: true, EMPTY: ""}
    ports: ["8080:8080", "127.0.0.1:53:53/udp", "[::1]:9000:90", "0.0.0.0:81:80"]
    volumes: ["data:/data", "/var/lib/x:/x:ro", "/srv:/srv:rw"]
    tmpfs: [/run]
    restart: on-failure:5
    healthcheck: {http: "http://127.0.0.1:8080/healthz", interval: 5s, timeout: 2s, start_period: 10s}
    depends_on: {db: {condition: service_healthy}, cache: {}}
    resources: {memory: 128M, cpus: "0.50", pids: 256}
    stop_signal: INT
    cap_add: [net_admin, CAP_SYS_TIME]
    cap_drop: [all]
    sysctls: {net.ipv4.ip_forward: 1, kernel.shmmax: "65536"}
  db:
    image: docker.io/library/postgres:16
    pull_policy: missing
    notify: true
    environment: ["A=b=c", "E="]
    depends_on: [cache]
    network_mode: host
    stop_grace_period: 1m
  cache:
    image: oci-layout:images/cache
    healthcheck: {tcp: "127.0.0.1:6379", retries: 5}
  job:
    image: docker-archive:job.tar
    healthcheck: {exec: pg_isready -q}
    depends_on: {cache: {condition: service_completed_successfully}}
onboot:
  - name: setup
    image: go://example.com/cmd/setup
    command: [setup, --once]
    volumes: ["data:/data"]
    timeout: 30s
  - name: migrate
    image: reg.example.com:5000/ns/migrate@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    pull_policy: always
update:
  server: https://updates.example.com/repo
  root: keys/root.json
  bandwidth_limit: 10M
  reboot: {strategy: window, window: "Sat,Sun 02:00-04:00", timezone: Europe/Paris}
`

func TestParseServices(t *testing.T) {
	o, err := Parse("ok.yaml", []byte(servicesOS))
	if err != nil {
		t.Fatal(err)
	}
	web := o.Services["web"]
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", what, got, want)
		}
	}
	check("command", web.Command, StringList{"/hello-web", "-listen", ":8080"})
	check("entrypoint", web.Entrypoint, StringList{})
	check("environment", web.Environment, Env{"GREETING": "hi", "N": "3", "B": "true", "EMPTY": ""})
	check("ports", web.Ports, []Port{
		{HostPort: 8080, ContainerPort: 8080, Protocol: "tcp"},
		{HostIP: "127.0.0.1", HostPort: 53, ContainerPort: 53, Protocol: "udp"},
		{HostIP: "::1", HostPort: 9000, ContainerPort: 90, Protocol: "tcp"},
		{HostPort: 81, ContainerPort: 80, Protocol: "tcp"},
	})
	check("volumes", web.Volumes, []Volume{
		{Name: "data", Target: "/data"},
		{Source: "/var/lib/x", Target: "/x", ReadOnly: true},
		{Source: "/srv", Target: "/srv"},
	})
	check("restart", web.Restart, RestartPolicy{Mode: "on-failure", MaxRetries: 5})
	check("healthcheck", *web.Healthcheck, Healthcheck{HTTP: "http://127.0.0.1:8080/healthz",
		Interval: Duration(5 * time.Second), Timeout: Duration(2 * time.Second), Retries: 3, StartPeriod: Duration(10 * time.Second)})
	check("depends_on", web.DependsOn, DependsOn{"db": {ConditionHealthy}, "cache": {ConditionStarted}})
	check("memory", web.Resources.MemoryBytes, int64(128<<20))
	check("cpus", web.Resources.CPUs, 0.5)
	check("signal", []any{web.StopSignal, web.StopSignalNumber}, []any{"SIGINT", 2})
	check("caps", []any{web.CapAdd, web.CapDrop}, []any{[]string{"CAP_NET_ADMIN", "CAP_SYS_TIME"}, []string{"ALL"}})
	check("defaults", []any{web.PullPolicy, web.NetworkMode, web.Hostname, web.StopGracePeriod}, []any{PullBuild, NetworkBridge, "web", DefaultStopGracePeriod})

	db := o.Services["db"]
	check("db env", db.Environment, Env{"A": "b=c", "E": ""})
	check("db depends", db.DependsOn, DependsOn{"cache": {ConditionStarted}})
	check("db restart", db.Restart, RestartPolicy{Mode: "no"})
	check("db grace", db.StopGracePeriod, Duration(time.Minute))
	check("cache health", *o.Services["cache"].Healthcheck, Healthcheck{TCP: "127.0.0.1:6379", Interval: DefaultHealthInterval, Timeout: DefaultHealthTimeout, Retries: 5})
	check("job health", o.Services["job"].Healthcheck.Exec, StringList{"pg_isready", "-q"})

	check("onboot[0]", []any{o.Onboot[0].Timeout, o.Onboot[0].Volumes, o.Onboot[0].PullPolicy}, []any{Duration(30 * time.Second), []Volume{{Name: "data", Target: "/data"}}, PullBuild})
	check("onboot[1].timeout", o.Onboot[1].Timeout, DefaultOnbootTimeout)

	u := o.Update
	check("update", []any{u.Channel, u.Interval, u.Jitter, u.BandwidthBytes, u.Trial},
		[]any{"stable", DefaultUpdateInterval, DefaultUpdateInterval / 10, int64(10 << 20), Trial{DefaultHealthyFor, DefaultTrialTimeout}})
}

func TestServiceErrors(t *testing.T) {
	head := "name: a\nversion: 1\n"
	svc := func(body string) string { return head + "services:\n  s:\n    image: docker.io/library/x:1\n" + body }
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"bad name", head + "services:\n  Web_1:\n    image: docker.io/library/x:1\n", []string{"bad.yaml:4:3: services.Web_1: service name \"Web_1\" must be"}},
		{"name with dot", head + "services:\n  a.b:\n    image: docker.io/library/x:1\n", []string{"service name \"a.b\""}},
		{"long name", head + "services:\n  " + strings.Repeat("a", 64) + ":\n    image: docker.io/library/x:1\n", []string{"must be 1-63"}},
		{"short ref", head + "services:\n  s:\n    image: nginx\n", []string{"bad.yaml:5:12: services.s.image: \"nginx\" is not a full registry reference"}},
		{"ref without tag", head + "services:\n  s:\n    image: docker.io/library/nginx\n", []string{"services.s.image:"}},
		{"bad go", head + "services:\n  s:\n    image: go://a//b\n", []string{"services.s.image: \"go://a//b\": go:// takes"}},
		{"go dotdot inside", head + "services:\n  s:\n    image: go://./a/../b\n", []string{"go:// takes"}},
		{"go outside the module", head + "services:\n  s:\n    image: go://../x\n", []string{"go:// takes"}},
		{"go dash", head + "services:\n  s:\n    image: go://./-x\n", []string{"go:// takes"}},
		{"empty oci", head + "services:\n  s:\n    image: \"oci-layout:\"\n", []string{"needs a path"}},
		{"go with pull", head + "services:\n  s:\n    image: go://./x\n    pull_policy: always\n", []string{"bad.yaml:6:18: services.s.pull_policy: go: images are made at build time"}},
		{"bad pull", svc("    pull_policy: sometimes\n"), []string{"services.s.pull_policy: \"sometimes\" is not build, missing or always"}},
		{"command mapping", svc("    command: {a: b}\n"), []string{"bad.yaml:6:14: services.s.command: expected a list of strings or a string, got a mapping"}},
		{"command item list", svc("    command: [a, [b]]\n"), []string{"services.s.command[1]: expected a string, got a list"}},
		{"env without =", svc("    environment: [HOME]\n"), []string{"bad.yaml:6:19: services.s.environment[0]: \"HOME\" has no '='"}},
		{"env null", svc("    environment: {HOME: }\n"), []string{"services.s.environment.HOME: no value"}},
		{"env dup", svc("    environment: [A=1, A=2]\n"), []string{"services.s.environment.A: variable given twice"}},
		{"env bad name", svc("    environment: [\"A B=1\"]\n"), []string{"is not a variable name"}},
		{"env nul", svc("    environment: [\"A=\\0\"]\n"), []string{"NUL"}},
		{"env nested", svc("    environment: {A: [1]}\n"), []string{"services.s.environment.A: expected a string, got a list"}},
		{"env scalar", svc("    environment: A=1\n"), []string{"expected a mapping or a list"}},
		{"port no host", svc("    ports: [\"80\"]\n"), []string{"bad.yaml:6:13: services.s.ports[0]: \"80\" is not [IP:]HOST:CONTAINER", "host port is required"}},
		{"port range", svc("    ports: [\"80-81:80-81\"]\n"), []string{"ranges are not supported"}},
		{"port zero", svc("    ports: [\"0:80\"]\n"), []string{"host port \"0\""}},
		{"port huge", svc("    ports: [\"99999999999999999999:80\"]\n"), []string{"host port"}},
		{"port proto", svc("    ports: [\"80:80/sctp\"]\n"), []string{"protocol \"sctp\""}},
		{"port bad ip", svc("    ports: [\"1.2.3:80:80\"]\n"), []string{"\"1.2.3\" is not an IP address"}},
		{"port v6 unbracketed", svc("    ports: [\"::1:80:80\"]\n"), []string{"brackets"}},
		{"port host mode", svc("    network_mode: host\n    ports: [\"80:80\"]\n"), []string{"only with network_mode bridge"}},
		{"port conflict", head + "services:\n  a:\n    image: docker.io/library/x:1\n    ports: [\"80:80\"]\n  b:\n    image: docker.io/library/x:1\n    ports: [\"127.0.0.1:80:8080\"]\n",
			[]string{"bad.yaml:9:13: services.b.ports[0]: host port 80/tcp is already published by services.a.ports[0]"}},
		{"bad network mode", svc("    network_mode: container:x\n"), []string{"is not bridge, host or none"}},
		{"volume relative target", svc("    volumes: [\"data:data\"]\n"), []string{"target \"data\" must be an absolute"}},
		{"volume dotdot", svc("    volumes: [\"/a/../b:/b\"]\n"), []string{"host path \"/a/../b\""}},
		{"volume target dotdot", svc("    volumes: [\"data:/x/../etc\"]\n"), []string{"target \"/x/../etc\""}},
		{"volume bad name", svc("    volumes: [\"-x:/x\"]\n"), []string{"neither an absolute host path nor a volume name"}},
		{"volume mode", svc("    volumes: [\"data:/x:rx\"]\n"), []string{"mode \"rx\""}},
		{"volume dup target", svc("    volumes: [\"a:/x\", \"b:/x\"]\n"), []string{"target \"/x\" is already mounted by volumes[0]"}},
		{"tmpfs relative", svc("    tmpfs: [run]\n"), []string{"services.s.tmpfs[0]"}},
		{"restart", svc("    restart: sometimes\n"), []string{"bad.yaml:6:14: services.s.restart: \"sometimes\" is not no, on-failure[:N], always or unless-stopped"}},
		{"restart count", svc("    restart: on-failure:-1\n"), []string{"retry count"}},
		{"health none", svc("    healthcheck: {interval: 5s}\n"), []string{"services.s.healthcheck: needs exactly one of exec, http and tcp (has 0)"}},
		{"health two", svc("    healthcheck: {http: \"http://a/\", tcp: \"a:1\"}\n"), []string{"has 2"}},
		{"health https", svc("    healthcheck: {http: \"https://a/\"}\n"), []string{"is not an http:// URL"}},
		{"health tcp", svc("    healthcheck: {tcp: \"a\"}\n"), []string{"is not HOST:PORT"}},
		{"health exec empty", svc("    healthcheck: {exec: []}\n"), []string{"empty command"}},
		{"health duration int", svc("    healthcheck: {tcp: \"a:1\", interval: 30}\n"), []string{"bad.yaml:6:41: services.s.healthcheck.interval: expected a duration such as 10s or 1m30s, got \"30\""}},
		{"health negative", svc("    healthcheck: {tcp: \"a:1\", timeout: -1s}\n"), []string{"services.s.healthcheck.timeout: expected a duration such as 10s or 1m30s, got \"-1s\": a duration may not be negative"}},
		{"health retries", svc("    healthcheck: {tcp: \"a:1\", retries: -1}\n"), []string{"retries: -1 must be"}},
		{"depends missing", svc("    depends_on: [db]\n"), []string{"bad.yaml:6:18: services.s.depends_on.db: no service is called \"db\" (services: s)"}},
		{"depends self", svc("    depends_on: [s]\n"), []string{"a service cannot depend on itself"}},
		{"depends dup", svc("    depends_on: [s, s]\n"), []string{"\"s\" given twice"}},
		{"depends condition", head + "services:\n  a:\n    image: docker.io/library/x:1\n    depends_on: {b: {condition: up}}\n  b:\n    image: docker.io/library/x:1\n", []string{"services.a.depends_on.b.condition: \"up\" is not"}},
		{"depends unknown field", head + "services:\n  a:\n    image: docker.io/library/x:1\n    depends_on: {b: {restart: true}}\n", []string{"services.a.depends_on.b.restart: unknown field"}},
		{"healthy without check", head + "services:\n  a:\n    image: docker.io/library/x:1\n    depends_on: {b: {condition: service_healthy}}\n  b:\n    image: docker.io/library/x:1\n", []string{"service_healthy needs \"b\" to have a healthcheck or notify: true"}},
		{"cycle", head + "services:\n  a:\n    image: docker.io/library/x:1\n    depends_on: [b]\n  b:\n    image: docker.io/library/x:1\n    depends_on: [c]\n  c:\n    image: docker.io/library/x:1\n    depends_on: [a]\n",
			[]string{"services.c.depends_on.a: dependency cycle: a -> b -> c -> a"}},
		{"memory", svc("    resources: {memory: 12X}\n"), []string{"services.s.resources.memory: \"12X\" is not a size"}},
		{"memory small", svc("    resources: {memory: 1M}\n"), []string{"below the minimum of 6M"}},
		{"memory huge", svc("    resources: {memory: 99999999999T}\n"), []string{"too large"}},
		{"cpus", svc("    resources: {cpus: 2000}\n"), []string{"services.s.resources.cpus: 2000 must be more than 0"}},
		{"cpus nan", svc("    resources: {cpus: .nan}\n"), []string{"services.s.resources.cpus"}},
		{"cpus quoted text", svc("    resources: {cpus: \"half\"}\n"), []string{"services.s.resources.cpus: expected a number, got \"half\""}},
		{"cpus quoted hex", svc("    resources: {cpus: \"0x1p-2\"}\n"), []string{"services.s.resources.cpus: expected a number"}},
		{"pids", svc("    resources: {pids: -1}\n"), []string{"bad.yaml:6:23: services.s.resources.pids: -1 may not be negative (0: no limit)"}},
		{"pids huge", svc("    resources: {pids: 99999999999999999999999}\n"), []string{"services.s.resources.pids: expected a whole number"}},
		{"signal", svc("    stop_signal: SIGFOO\n"), []string{"\"SIGFOO\" is not a signal"}},
		{"signal number", svc("    stop_signal: 65\n"), []string{"\"65\" is not a signal"}},
		{"signal real-time", svc("    stop_signal: RTMIN+31\n"), []string{"\"RTMIN+31\" is not a signal"}},
		{"user", svc("    user: \"a:b:c\"\n"), []string{"is not NAME, UID"}},
		{"working dir", svc("    working_dir: x\n"), []string{"services.s.working_dir"}},
		{"hostname", svc("    hostname: a_b\n"), []string{"services.s.hostname"}},
		{"socket", svc("    sockets: [\"http://:80\"]\n"), []string{"is not tcp://"}},
		{"socket unix relative", svc("    sockets: [\"unix://x.sock\"]\n"), []string{"unix:// takes an absolute"}},
		{"socket activation", svc("    sockets: [\"tcp://:8080\"]\n"), []string{"socket activation is not supported"}},
		{"cap", svc("    cap_add: [NET_FOO]\n"), []string{"services.s.cap_add[0]: \"NET_FOO\" is not a capability"}},
		{"sysctl", svc("    sysctls: {kernel.panic: 1}\n"), []string{"\"kernel.panic\" is not a namespaced sysctl"}},
		{"sysctl dotdot", svc("    sysctls: {net..x: 1}\n"), []string{"not a namespaced sysctl"}},
		{"onboot no name", head + "onboot:\n  - image: docker.io/library/x:1\n", []string{"onboot[0].name: required"}},
		{"onboot dup", head + "onboot:\n  - {name: a, image: docker.io/library/x:1}\n  - {name: a, image: docker.io/library/x:1}\n", []string{"onboot[1].name: \"a\" is already the name of onboot[0]"}},
		{"onboot clash", head + "services:\n  a:\n    image: docker.io/library/x:1\nonboot:\n  - {name: a, image: docker.io/library/x:1}\n", []string{"already the name of a service"}},
		{"onboot no image", head + "onboot:\n  - {name: a}\n", []string{"onboot[0].image: required"}},
		{"several", svc("    restart: x\n    ports: [x]\n    tmpfs: [y]\n"), []string{"bad.yaml:6:14: services.s.restart", "bad.yaml:7:13: services.s.ports[0]", "bad.yaml:8:13: services.s.tmpfs[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { expectErrors(t, tt.in, tt.want) })
	}
}

func TestUpdateErrors(t *testing.T) {
	up := func(body string) string { return "name: a\nversion: 1\nupdate:\n" + body }
	ok := "  server: http://127.0.0.1:8080\n  root: root.json\n"
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "name: a\nversion: 1\nupdate: {}\n", []string{"update.server: required", "update.root: required"}},
		{"server", up("  server: ftp://x\n  root: r.json\n"), []string{"bad.yaml:4:11: update.server: \"ftp://x\" is not an http:// or https:// URL"}},
		{"channel", up(ok + "  channel: Stable\n"), []string{"update.channel: \"Stable\""}},
		{"interval", up(ok + "  interval: 10s\n"), []string{"update.interval: 10s is shorter than the minimum of 1m"}},
		{"jitter", up(ok + "  interval: 1m\n  jitter: 2m\n"), []string{"update.jitter: 2m0s is longer than the interval"}},
		{"bandwidth", up(ok + "  bandwidth_limit: fast\n"), []string{"update.bandwidth_limit: \"fast\" is not a size"}},
		{"strategy", up(ok + "  reboot: {strategy: later}\n"), []string{"update.reboot.strategy: \"later\" is not immediate, window or fleetlock"}},
		{"window required", up(ok + "  reboot: {strategy: window}\n"), []string{"update.reboot.window: required for strategy window"}},
		{"window syntax", up(ok + "  reboot: {strategy: window, window: \"Sat 2:00-4:00\"}\n"), []string{"is not HH:MM-HH:MM"}},
		{"window day", up(ok + "  reboot: {strategy: window, window: \"Sam 02:00-04:00\"}\n"), []string{"\"Sam\" is not a day"}},
		{"window empty", up(ok + "  reboot: {strategy: window, window: \"02:00-02:00\"}\n"), []string{"is empty"}},
		{"window unused", up(ok + "  reboot: {window: \"02:00-03:00\"}\n"), []string{"only for strategy window"}},
		{"timezone", up(ok + "  reboot: {timezone: ../etc/passwd}\n"), []string{"is not an IANA time zone"}},
		{"fleetlock url", up(ok + "  reboot: {strategy: fleetlock, fleetlock: \"x\"}\n"), []string{"update.reboot.fleetlock"}},
		{"group", up(ok + "  reboot: {strategy: fleetlock, group: \"a b\"}\n"), []string{"update.reboot.group"}},
		{"trial", up(ok + "  trial: {healthy_for: 10m}\n"), []string{"update.trial.timeout: 5m0s must be longer than healthy_for (10m0s)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { expectErrors(t, tt.in, tt.want) })
	}
}

func TestUpdateFleetLockDefaults(t *testing.T) {
	o, err := Parse("ok.yaml", []byte("name: a\nversion: 1\nupdate:\n  server: https://u.example/r\n  root: r.json\n  interval: 10m\n  reboot: {strategy: fleetlock}\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := o.Update.Reboot
	if r.FleetLock != "https://u.example/r" || r.Group != DefaultRebootGroup || o.Update.Jitter != Duration(time.Minute) {
		t.Errorf("defaults: %+v jitter %v", r, o.Update.Jitter)
	}
}

// expectErrors parses in and checks that the error text holds each of want,
// in order.
func expectErrors(t *testing.T, in string, want []string) {
	t.Helper()
	_, err := Parse("bad.yaml", []byte(in))
	if err == nil {
		t.Fatal("no error")
	}
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %T is not Errors: %v", err, err)
	}
	text := err.Error()
	rest := text
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("error %q does not contain %q (in order)", text, w)
		}
		rest = rest[i+len(w):]
	}
}
