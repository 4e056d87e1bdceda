// Package storetest holds test helpers for the playback store: a generator
// of realistic shell recordings, to measure the search index against the
// casts it indexes and to fill stores for start-up tests and benchmarks.
package storetest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/sshward/sshward/recorder"
)

// ShellCast returns the asciicast v2 of an interactive shell session of
// about size bytes, as the agent's recorder.Writer encodes it: a coloured
// prompt, commands typed a key at a time (echoed as output and, when input
// is true, recorded as input), and what shells print — ls -la, ps aux,
// nginx access logs, journalctl, git log, kubectl, df, systemctl status, a
// progress bar redrawn with \r, a top screen drawn with cursor moves —
// written in pty-sized reads cut at arbitrary bytes. The same seed gives
// the same bytes. Unique tokens (PIDs, request ids, hashes, timestamps,
// addresses) come at the rate real output has them, which is what makes a
// word index large.
func ShellCast(seed uint64, size int, input bool) []byte {
	g := &gen{rng: rand.New(rand.NewPCG(seed, 0x5eed)), input: input}
	var buf bytes.Buffer
	start := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC).Add(time.Duration(seed%100000) * time.Minute)
	g.now = start
	w, err := recorder.NewWriter(&buf, recorder.Header{Width: 120, Height: 32}, start, func() time.Time { return g.now })
	if err != nil {
		panic(err) // a fixed, valid header
	}
	g.w = w
	g.user = pick(g.rng, users)
	g.host = pick(g.rng, hosts) + "-" + fmt.Sprint(g.rng.IntN(20)+1)
	g.cwd = pick(g.rng, dirs)
	w.Marker(fmt.Sprintf("session start user=%s@corp principal=%s key_id=%s@laptop serial=%d tier=production from=10.1.%d.%d:%d kind=shell",
		g.user, g.user, g.user, g.rng.IntN(1e6), g.rng.IntN(255), g.rng.IntN(255), 40000+g.rng.IntN(20000)))
	for buf.Len() < size {
		g.command()
	}
	w.Marker("session end status=0")
	w.Close()
	return buf.Bytes()
}

type gen struct {
	rng               *rand.Rand
	w                 *recorder.Writer
	now               time.Time
	input             bool
	user, host, cwd   string
	out               bytes.Buffer // output not yet flushed as pty reads
	clockH, clockM, s int
}

func (g *gen) tick(d time.Duration) { g.now = g.now.Add(d) }

func (g *gen) prompt() string {
	return fmt.Sprintf("\x1b[01;32m%s@%s\x1b[00m:\x1b[01;34m%s\x1b[00m$ ", g.user, g.host, g.cwd)
}

// typeLine types cmd a key at a time, as a person does.
func (g *gen) typeLine(cmd string) {
	g.w.Output([]byte(g.prompt()))
	g.tick(time.Duration(500+g.rng.IntN(4000)) * time.Millisecond)
	for i := 0; i < len(cmd); i++ {
		if g.input {
			g.w.Input([]byte(cmd[i : i+1]))
		}
		g.w.Output([]byte(cmd[i : i+1]))
		g.tick(time.Duration(60+g.rng.IntN(180)) * time.Millisecond)
		if g.rng.IntN(40) == 0 && i > 0 { // a typo, rubbed out
			if g.input {
				g.w.Input([]byte("x\x7f"))
			}
			g.w.Output([]byte("x\b \b"))
		}
	}
	if g.input {
		g.w.Input([]byte("\r"))
	}
	g.w.Output([]byte("\r\n"))
	g.tick(time.Duration(20+g.rng.IntN(200)) * time.Millisecond)
}

// println queues a line of output; flush writes the queue as pty reads.
func (g *gen) println(format string, args ...any) {
	fmt.Fprintf(&g.out, format, args...)
	g.out.WriteString("\r\n")
}

func (g *gen) flush() {
	b := g.out.Bytes()
	for len(b) > 0 {
		n := min(len(b), 64+g.rng.IntN(4032))
		g.w.Output(b[:n])
		b = b[n:]
		g.tick(time.Duration(1+g.rng.IntN(30)) * time.Millisecond)
	}
	g.out.Reset()
}

func (g *gen) clock() string {
	g.s += 1 + g.rng.IntN(7)
	if g.s >= 60 {
		g.s -= 60
		g.clockM++
	}
	if g.clockM >= 60 {
		g.clockM = 0
		g.clockH = (g.clockH + 1) % 24
	}
	return fmt.Sprintf("%02d:%02d:%02d", 8+g.clockH%14, g.clockM, g.s)
}

func (g *gen) hex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[g.rng.IntN(16)]
	}
	return string(b)
}

func (g *gen) ip() string {
	return fmt.Sprintf("10.%d.%d.%d", g.rng.IntN(4), g.rng.IntN(32), 1+g.rng.IntN(254))
}

func (g *gen) command() {
	switch g.rng.IntN(13) {
	case 0:
		g.typeLine("ls -la")
		g.println("total %d", 8+g.rng.IntN(400))
		for range 5 + g.rng.IntN(30) {
			name, isDir := pick(g.rng, files), g.rng.IntN(3) == 0
			perm, col := "-rw-r--r--", ""
			if isDir {
				perm, col = "drwxr-xr-x", "\x1b[01;34m"
			} else if strings.HasSuffix(name, ".sh") {
				perm, col = "-rwxr-xr-x", "\x1b[01;32m"
			}
			g.println("%s %2d %s %s %7d Dec %2d %s %s%s\x1b[0m", perm, 1+g.rng.IntN(9), g.user, g.user,
				g.rng.IntN(200000), 1+g.rng.IntN(28), g.clock()[:5], col, name)
		}
	case 1:
		g.typeLine("ps aux | head -40")
		g.println("USER         PID %%CPU %%MEM    VSZ   RSS TTY      STAT START   TIME COMMAND")
		for range 10 + g.rng.IntN(30) {
			g.println("%-8s %7d %4.1f %4.1f %6d %5d ?        %-4s %s   %d:%02d %s", pick(g.rng, procUsers), 1+g.rng.IntN(99999),
				g.rng.Float64()*20, g.rng.Float64()*8, 10000+g.rng.IntN(900000), 1000+g.rng.IntN(90000),
				pick(g.rng, []string{"Ss", "S", "Sl", "R", "S<", "I<"}), g.clock()[:5], g.rng.IntN(60), g.rng.IntN(60), pick(g.rng, procs))
		}
	case 2, 3:
		g.typeLine("sudo tail -n 100 /var/log/nginx/access.log")
		for range 20 + g.rng.IntN(100) {
			g.println(`%s - - [01/Dec/2026:%s +0000] "%s %s HTTP/1.1" %d %d "-" "%s" rt=%.3f req=%s`, g.ip(), g.clock(),
				pick(g.rng, []string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}),
				fmt.Sprintf(pick(g.rng, paths), g.rng.IntN(100000)), pick(g.rng, []int{200, 200, 200, 201, 204, 301, 304, 400, 404, 500, 502}),
				g.rng.IntN(50000), pick(g.rng, agents), g.rng.Float64(), g.hex(16))
		}
	case 4:
		g.typeLine("journalctl -u " + pick(g.rng, services) + " --since today --no-pager")
		svc := pick(g.rng, services)
		for range 15 + g.rng.IntN(60) {
			lvl := pick(g.rng, []string{"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"})
			col := map[string]string{"INFO": "", "DEBUG": "\x1b[2m", "WARN": "\x1b[33m", "ERROR": "\x1b[1;31m"}[lvl]
			g.println("%sDec 01 %s %s %s[%d]: %s %s user_id=%d trace=%s duration=%dms\x1b[0m", col, g.clock(), g.host, svc, 1000+g.rng.IntN(60000),
				lvl, pick(g.rng, messages), g.rng.IntN(1e6), g.hex(8), g.rng.IntN(5000))
		}
	case 5:
		g.typeLine("git log --oneline -20")
		for range 20 {
			g.println("\x1b[33m%s\x1b[m %s %s", g.hex(7), pick(g.rng, gitVerbs), pick(g.rng, gitThings))
		}
	case 6:
		g.typeLine("kubectl get pods -n " + pick(g.rng, []string{"prod", "staging", "monitoring"}))
		g.println("NAME                                  READY   STATUS    RESTARTS   AGE")
		for range 5 + g.rng.IntN(25) {
			g.println("%-37s %d/%d     %-9s %-10d %dd", pick(g.rng, services)+"-"+g.hex(9)+"-"+g.hex(5), 1, 1,
				pick(g.rng, []string{"Running", "Running", "Running", "Pending", "CrashLoopBackOff", "Completed"}), g.rng.IntN(12), 1+g.rng.IntN(90))
		}
	case 7:
		g.typeLine("df -h")
		g.println("Filesystem      Size  Used Avail Use%% Mounted on")
		for _, m := range []string{"/", "/boot", "/var", "/var/lib/docker", "/srv/data"} {
			g.println("/dev/nvme0n1p%d  %3dG  %3dG  %3dG  %2d%% %s", 1+g.rng.IntN(5), 20+g.rng.IntN(900), g.rng.IntN(500), g.rng.IntN(400), g.rng.IntN(100), m)
		}
	case 8:
		svc := pick(g.rng, services)
		g.typeLine("systemctl status " + svc)
		g.println("\x1b[0;1;32m●\x1b[0m %s.service - %s server", svc, svc)
		g.println("     Loaded: loaded (/lib/systemd/system/%s.service; enabled; vendor preset: enabled)", svc)
		g.println("     Active: \x1b[0;1;32mactive (running)\x1b[0m since Mon 2026-11-30 %s UTC; %dh ago", g.clock(), g.rng.IntN(48))
		g.println("   Main PID: %d (%s)", 1000+g.rng.IntN(60000), svc)
		g.println("      Tasks: %d (limit: 9457)", g.rng.IntN(200))
		g.println("     Memory: %.1fM", g.rng.Float64()*900)
	case 9:
		g.typeLine("cd " + pick(g.rng, dirs))
		g.cwd = pick(g.rng, dirs)
	case 10:
		g.typeLine("sudo apt-get install -y " + pick(g.rng, []string{"htop", "jq", "postgresql-client", "nginx", "tcpdump"}))
		g.flush()
		for p := 0; p <= 100; p += 5 + g.rng.IntN(15) {
			g.w.Output(fmt.Appendf(nil, "\r%3d%% [%-40s] %d kB/s", p, strings.Repeat("#", p*40/100), 100+g.rng.IntN(9000)))
			g.tick(time.Duration(50+g.rng.IntN(400)) * time.Millisecond)
		}
		g.println("")
		g.println("Setting up package (%d.%d.%d-%d) ...", g.rng.IntN(5), g.rng.IntN(20), g.rng.IntN(10), 1+g.rng.IntN(5))
	case 11:
		g.typeLine("top -b -n 1 | head -20")
		g.out.WriteString("\x1b[H\x1b[2J")
		g.println("top - %s up %d days,  3 users,  load average: %.2f, %.2f, %.2f\x1b[K", g.clock(), g.rng.IntN(400), g.rng.Float64()*4, g.rng.Float64()*4, g.rng.Float64()*4)
		g.println("Tasks: %d total,   1 running, %d sleeping,   0 stopped,   0 zombie\x1b[K", 100+g.rng.IntN(200), 100+g.rng.IntN(200))
		for i := range 12 {
			g.out.WriteString(fmt.Sprintf("\x1b[%d;1H", i+7))
			g.println("\x1b[7m%7d\x1b[m %-8s  20   0 %7d %6d %6d S %5.1f %5.1f %3d:%02d.%02d %s\x1b[K", 1+g.rng.IntN(99999), pick(g.rng, procUsers),
				g.rng.IntN(900000), g.rng.IntN(90000), g.rng.IntN(9000), g.rng.Float64()*30, g.rng.Float64()*10, g.rng.IntN(100), g.rng.IntN(60), g.rng.IntN(100), pick(g.rng, procs))
		}
	case 12:
		g.typeLine("cat " + pick(g.rng, []string{"config.yaml", "/etc/app/settings.yml", "deploy/values.yaml"}))
		for range 10 + g.rng.IntN(30) {
			g.println("%s%s: %s", strings.Repeat("  ", g.rng.IntN(3)), pick(g.rng, configKeys), pick(g.rng, configValues))
		}
	}
	g.flush()
}

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

var (
	users        = []string{"alice", "bob", "carol", "deploy", "dave", "erin", "root"}
	hosts        = []string{"web", "db", "api", "worker", "cache", "lb", "batch"}
	dirs         = []string{"~", "~/app", "/var/log", "/etc/nginx", "/srv/releases/current", "/opt/billing", "~/src/infra"}
	files        = []string{"README.md", "Makefile", "main.go", "go.mod", "go.sum", "deploy.sh", "backup.sh", "config", "logs", "node_modules", "dist", "src", ".env", "docker-compose.yml", "package.json", "requirements.txt", "app.py", "migrations", "scripts", "vendor"}
	procUsers    = []string{"root", "www-data", "postgres", "redis", "nobody", "systemd+", "deploy"}
	procs        = []string{"/usr/sbin/sshd -D", "nginx: worker process", "/usr/lib/postgresql/16/bin/postgres -D /var/lib/postgresql/16/main", "redis-server *:6379", "/usr/bin/dockerd -H fd://", "[kworker/0:1-events]", "/usr/bin/python3 /opt/billing/worker.py --queue=invoices", "node /srv/app/server.js", "/lib/systemd/systemd-journald", "containerd", "bash", "sshd: deploy@pts/0", "/usr/sbin/cron -f", "java -Xmx2g -jar /opt/search/search.jar"}
	paths        = []string{"/api/v1/users/%d", "/api/v1/orders/%d/items", "/static/js/app.%d.js", "/healthz?%d", "/login?next=/dashboard/%d", "/api/v2/search?q=item%d", "/images/products/%d.jpg", "/api/v1/invoices/%d/pdf"}
	agents       = []string{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36", "curl/8.5.0", "kube-probe/1.31", "Go-http-client/2.0", "python-requests/2.32.3", "Prometheus/2.54.1"}
	services     = []string{"nginx", "postgresql", "billing-api", "checkout", "redis", "search-indexer", "auth-gateway", "notifications"}
	messages     = []string{"request completed", "connection reset by peer", "cache miss for key", "retrying upstream request", "slow query detected", "token refreshed", "payment authorized", "worker started", "checkpoint complete", "rate limit exceeded for client", "invalid credentials supplied", "scheduled job finished"}
	gitVerbs     = []string{"fix:", "feat:", "chore:", "refactor:", "docs:", "test:", "Merge pull request", "Revert", "build:"}
	gitThings    = []string{"retry uploads on 503", "add invoice export", "bump go to 1.26", "handle empty cart", "log request ids", "rotate TLS certificates", "drop legacy endpoint", "speed up search", "fix race in cache warmup", "update dependencies"}
	configKeys   = []string{"database_url", "pool_size", "timeout", "log_level", "listen", "replicas", "image", "tag", "memory", "cpu", "feature_flags", "region", "bucket", "retries"}
	configValues = []string{"postgres://app@db-1:5432/app", "20", "30s", "info", "0.0.0.0:8080", "3", "registry.corp/billing-api", "v2.14.3", "512Mi", "250m", "[checkout_v2, fast_search]", "eu-west-1", "corp-backups", "5"}
)
