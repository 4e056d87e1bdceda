package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

// The fault kinds, in the order the summary lists them.
const (
	faultPlaybackKill = "playback-kill" // kill -9 sshward-playback, start it again
	faultAgentKill    = "agent-kill"    // kill -9 one sshward-agent, start it again
	faultCARestart    = "ca-restart"    // kill -9 or SIGTERM sshward-ca, start it again
	faultDiskFull     = "disk-full"     // fill the tmpfs under an agent's data dir, then free it
	faultNetCut       = "net-cut"       // cut the agent in the network namespace off, then restore
)

var allFaults = []string{faultPlaybackKill, faultAgentKill, faultCARestart, faultDiskFull, faultNetCut}

func want(cfg config, kind string) bool { return slices.Contains(cfg.Faults, kind) }

// injector injects one fault at a time, at seeded random gaps, going
// through every kind in a shuffled order before it repeats one: a short
// run still sees each kind.
type injector struct {
	s     *system
	busy  func() []*agent // agents with sessions under way (load.busy)
	rng   *rand.Rand
	gap   time.Duration
	kinds []string

	mu      sync.Mutex // guards the fields below
	counts  map[string]int
	current string   // the fault in effect, for the progress line
	errs    []string // recoveries that failed
}

func newInjector(cfg config, s *system, busy func() []*agent) *injector {
	in := &injector{s: s, busy: busy, rng: rand.New(rand.NewPCG(cfg.Seed, 0)), gap: cfg.FaultGap, counts: map[string]int{}}
	for _, k := range cfg.Faults {
		switch {
		case k == faultDiskFull && s.tmpfs == "", k == faultNetCut && s.net == nil:
			continue // dropped, and said so in the notes
		}
		in.kinds = append(in.kinds, k)
	}
	return in
}

// run injects faults until ctx ends; the fault under way is always
// undone (restart, free, restore) before it returns.
func (in *injector) run(ctx context.Context) {
	if len(in.kinds) == 0 {
		return
	}
	for {
		bag := slices.Clone(in.kinds)
		in.rng.Shuffle(len(bag), func(i, j int) { bag[i], bag[j] = bag[j], bag[i] })
		for _, k := range bag {
			gap := in.gap/2 + time.Duration(in.rng.Int64N(int64(in.gap)))
			if !sleep(ctx, gap) {
				return
			}
			in.inject(context.WithoutCancel(ctx), k)
		}
	}
}

// span is a random duration in [lo, hi).
func (in *injector) span(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(in.rng.Int64N(int64(hi-lo)))
}

func (in *injector) inject(ctx context.Context, kind string) {
	in.mu.Lock()
	in.counts[kind]++
	in.current = kind
	in.mu.Unlock()
	defer func() { in.mu.Lock(); in.current = ""; in.mu.Unlock() }()
	var err error
	switch kind {
	case faultPlaybackKill:
		in.s.playback.kill9()
		err = in.restart(ctx, in.s.playback, in.span(time.Second, 5*time.Second))
	case faultAgentKill:
		// An agent with a live session, so that the kill cuts one.
		busy := in.busy()
		a := busy[in.rng.IntN(len(busy))]
		a.kill9()
		err = in.restart(ctx, a.proc, in.span(500*time.Millisecond, 3*time.Second))
	case faultCARestart:
		if in.rng.IntN(2) == 0 {
			in.s.ca.kill9()
		} else {
			in.s.ca.stop()
		}
		err = in.restart(ctx, in.s.ca, in.span(500*time.Millisecond, 3*time.Second))
	case faultDiskFull:
		err = fillFor(ctx, in.s.tmpfs, in.span(3*time.Second, 8*time.Second))
	case faultNetCut:
		if err = in.s.net.setCut(ctx, true); err == nil {
			sleep(ctx, in.span(3*time.Second, 10*time.Second))
			err = in.s.net.setCut(ctx, false)
		}
	}
	if err != nil {
		in.mu.Lock()
		in.errs = append(in.errs, fmt.Sprintf("%s: %v", kind, err))
		in.mu.Unlock()
	}
}

// restart starts p again after down, trying three times.
func (in *injector) restart(ctx context.Context, p *proc, down time.Duration) error {
	sleep(ctx, down)
	var err error
	for range 3 {
		if err = p.start(ctx); err == nil {
			return nil
		}
		p.kill9()
		sleep(ctx, 2*time.Second)
	}
	return err
}

// fillFor fills the file system of dir to the last byte, holds it full
// for d, then frees it.
func fillFor(ctx context.Context, dir string, d time.Duration) error {
	path := filepath.Join(dir, ".soak-fill")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	defer f.Close()
	buf := make([]byte, 1<<20)
	for _, size := range []int{1 << 20, 4096, 1} {
		for {
			_, err := f.Write(buf[:size])
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				return fmt.Errorf("fill %s: %w", dir, err)
			}
		}
	}
	sleep(ctx, d)
	return nil
}

func (in *injector) snapshot() (counts map[string]int, current string, errs []string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	counts = map[string]int{}
	for k, v := range in.counts {
		counts[k] = v
	}
	return counts, in.current, slices.Clone(in.errs)
}
