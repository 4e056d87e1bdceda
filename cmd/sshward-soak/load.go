package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// markerRE finds the marker lines sessions print: SOAK TAG NNN. The
// command that prints them holds "SOAK %s %03d", which it does not match.
var markerRE = regexp.MustCompile(`SOAK (t[0-9]{6}) ([0-9]{3})`)

// clientSession is what one ssh client saw.
type clientSession struct {
	Tag    string
	Host   string
	Tier   string
	PTY    bool
	Lines  int          // lines the session was to print
	Seen   map[int]bool // marker lines the client printed
	Err    string       // ssh's exit error, if any
	Start  time.Time
	Finish time.Time
}

// load runs the engineers: each logs in, fetches certificates and runs ssh
// sessions one after the other; now and then one asks for break-glass
// and two incident commanders approve.
type load struct {
	s   *system
	seq atomic.Int64 // session tags

	mu        sync.Mutex // guards the fields below
	sessions  []*clientSession
	running   int
	live      map[string]int    // host → sessions under way there
	certsAck  map[uint64]string // serial → tier, acknowledged to the client
	certsFail int
	logins    int
	loginFail int
	requests  int
	approvals map[string]bool // "REQ-…/approver" acknowledged
	bgFail    int             // break-glass attempts given up (a fault hit a step)
	bgWhy     []string        // the first few reasons
}

func newLoad(s *system) *load {
	return &load{s: s, certsAck: map[uint64]string{}, approvals: map[string]bool{}, live: map[string]int{}}
}

// run runs one worker per engineer until ctx ends; sessions under way
// finish (within base) before it returns.
func (l *load) run(ctx, base context.Context, seed uint64) {
	var wg sync.WaitGroup
	for i, w := range l.s.workers {
		rng := rand.New(rand.NewPCG(seed, uint64(i+1)))
		wg.Go(func() { l.worker(ctx, base, w, rng) })
	}
	wg.Wait()
}

func (l *load) worker(ctx, base context.Context, w *person, rng *rand.Rand) {
	lastLogin := time.Now()
	for iter := 0; ctx.Err() == nil; iter++ {
		// Log in again now and then (a fresh TOTP step each time).
		if time.Since(lastLogin) > 75*time.Second {
			err := l.s.loginPerson(base, w)
			l.mu.Lock()
			if err != nil {
				l.loginFail++
			} else {
				l.logins++
			}
			l.mu.Unlock()
			lastLogin = time.Now()
		}
		if iter%6 == 1 { // one in six, from the second on: a short run has some too
			l.breakGlass(base, w, rng)
		} else if c, err := l.cert(base, w, "--tier", "production"); err == nil {
			l.ssh(base, c, l.pick(rng), "production", rng)
		}
		sleep(ctx, time.Duration(rng.IntN(500))*time.Millisecond)
	}
}

func (l *load) pick(rng *rand.Rand) *agent { return l.s.agents[rng.IntN(len(l.s.agents))] }

// certOut is what sshward cert --json prints.
type certOut struct {
	Certificate string `json:"certificate"`
	Key         string `json:"key"`
	Serial      uint64 `json:"serial"`
	Tier        string `json:"tier"`
}

// retry runs f until it succeeds, for up to 30 s (the CA or playback may
// be restarting), and returns the last error.
func retry(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) || !sleep(ctx, time.Second) {
			return err
		}
	}
}

// cert fetches a certificate; the serial the client was given counts as
// an acknowledged issuance, which the CA must have stored.
func (l *load) cert(ctx context.Context, w *person, args ...string) (certOut, error) {
	var c certOut
	err := retry(ctx, func() error {
		out, err := l.s.run.run(ctx, w.home, "", "sshward", append([]string{"cert", "--json"}, args...)...)
		if err != nil {
			return err
		}
		return json.Unmarshal([]byte(out), &c)
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.certsFail++
		return c, err
	}
	l.certsAck[c.Serial] = c.Tier
	return c, nil
}

// breakGlass is journey 2: request, two approvals by others, a single-use
// certificate, one session. A step the CA did not answer (it was
// restarting) is tried again only when the CA shows it was not taken.
func (l *load) breakGlass(ctx context.Context, w *person, rng *rand.Rand) {
	fail := func(step string, err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.bgFail++
		if len(l.bgWhy) < 5 {
			l.bgWhy = append(l.bgWhy, fmt.Sprintf("%s: %v", step, err))
		}
	}
	var req struct {
		ID string `json:"id"`
	}
	// Not retried: a request the CA stored without answering would be a
	// second one.
	out, err := l.s.run.run(ctx, w.home, "", "sshward", "request", "--tier", "break-glass", "--reason", fmt.Sprintf("SOAK-INC-%d", l.seq.Load()), "--json")
	if err == nil {
		err = json.Unmarshal([]byte(out), &req)
	}
	if err != nil {
		fail("request", err)
		return
	}
	l.mu.Lock()
	l.requests++
	l.mu.Unlock()
	for _, ap := range l.s.approver {
		err := retry(ctx, func() error {
			_, err := l.s.run.run(ctx, ap.home, "", "sshward", "approve", req.ID, "--reason", "soak")
			if err == nil {
				l.mu.Lock()
				l.approvals[req.ID+"/"+ap.name] = true
				l.mu.Unlock()
				return nil
			}
			if l.approvedBy(ctx, w, req.ID, ap.name) {
				return nil // taken, the answer lost: stored, not acknowledged
			}
			return err
		})
		if err != nil {
			fail("approve", err)
			return
		}
	}
	c, err := l.cert(ctx, w, "--tier", "break-glass", "--request", req.ID)
	if err != nil {
		fail("cert", err)
		return
	}
	l.ssh(ctx, c, l.pick(rng), "break-glass", rng)
}

// approvedBy reports whether the CA holds approver's approval of the
// requester's request id.
func (l *load) approvedBy(ctx context.Context, w *person, id, approver string) bool {
	out, err := l.s.run.run(ctx, w.home, "", "sshward", "requests", "--json")
	if err != nil {
		return false
	}
	var list []struct {
		ID        string `json:"id"`
		Approvals []struct {
			By string `json:"by"`
		} `json:"approvals"`
	}
	if json.Unmarshal([]byte(out), &list) != nil {
		return false
	}
	for _, r := range list {
		for _, a := range r.Approvals {
			if r.ID == id && a.By == approver {
				return true
			}
		}
	}
	return false
}

// ssh runs one stock OpenSSH session printing numbered marker lines and
// keeps what the client printed.
func (l *load) ssh(ctx context.Context, c certOut, a *agent, tier string, rng *rand.Rand) {
	cs := &clientSession{Tag: fmt.Sprintf("t%06d", l.seq.Add(1)), Host: a.host, Tier: tier, PTY: rng.IntN(2) == 0,
		Lines: 6 + rng.IntN(15), Seen: map[int]bool{}, Start: time.Now()}
	l.mu.Lock()
	l.sessions = append(l.sessions, cs)
	l.running++
	l.live[a.host]++
	l.mu.Unlock()
	defer func() { l.mu.Lock(); l.running--; l.live[a.host]--; l.mu.Unlock() }()

	host, port, _ := net.SplitHostPort(a.addr)
	script := fmt.Sprintf(`for i in $(seq 1 %d); do printf 'SOAK %%s %%03d\n' %s $i; sleep 0.2; done`, cs.Lines, cs.Tag)
	args := []string{"-F", "none", "-i", c.Key, "-o", "CertificateFile=" + c.Certificate, "-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=6", "-p", port}
	if cs.PTY {
		args = append(args, "-tt")
	}
	args = append(args, l.s.login+"@"+host, script)
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(sctx, "ssh", args...)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK=")
	out, err := cmd.Output()
	seen, why := map[int]bool{}, ""
	if err != nil {
		why = strings.TrimSpace(err.Error())
		if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
			why += ": " + lastLine(string(ee.Stderr))
		}
	}
	for _, m := range markerRE.FindAllStringSubmatch(string(out), -1) {
		if m[1] == cs.Tag {
			n, _ := strconv.Atoi(m[2])
			seen[n] = true
		}
	}
	l.mu.Lock()
	cs.Seen, cs.Err, cs.Finish = seen, why, time.Now()
	l.mu.Unlock()
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

// busy returns the agents with a session under way (a kill -9 there cuts
// it), or all agents when none has one.
func (l *load) busy() []*agent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*agent
	for _, a := range l.s.agents {
		if l.live[a.host] > 0 {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return l.s.agents
	}
	return out
}

// loadStats is a copy of the counters for the progress line.
type loadStats struct {
	started, running, acked, certs, certFail, requests, approvals int
}

func (l *load) stats() loadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := loadStats{started: len(l.sessions), running: l.running, certs: len(l.certsAck), certFail: l.certsFail, requests: l.requests, approvals: len(l.approvals)}
	for _, cs := range l.sessions {
		if len(cs.Seen) > 0 {
			st.acked++
		}
	}
	return st
}
