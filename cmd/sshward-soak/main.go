// Command sshward-soak runs the whole sshward system on this machine under
// bounded load while injecting faults at random, then counts what was lost
// (`make soak DURATION=10m`). It drives the real binaries next to it (or
// in --bin): one sshward-ca serve, one sshward-playback serve, several
// sshward-agent processes, engineers logging in with the sshward CLI and
// stock OpenSSH ssh sessions printing marker lines through the agents,
// break-glass requests with two approvals. Faults, one at a time, in a
// seeded order: playback kill -9 and restart, agent kill -9 and restart,
// CA kill -9 and restart, an agent's spool disk full (a tmpfs data
// directory filled and released) and a network cut (the agent in a network
// namespace loses its route). At the end it drains the spools and checks
// every marker line a client printed against the verified recordings.
// Exit status 1 when anything was lost, corrupted or duplicated, an
// acknowledged certificate or approval is not stored, or an audit log does
// not verify.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sshward/sshward/cmd/internal/cli"
)

const usage = "sshward-soak [--duration 10m] [--seed N] [--sessions N] [--agents N] [--fault-gap D] [--faults K,…] [--bin DIR] [--dir DIR] [--keep] [--json]"

func main() {
	ctx, stop := cli.SignalContext()
	code := cli.Exit("sshward-soak", run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

// config is the soak's flags.
type config struct {
	Duration  time.Duration // load and faults; the drain comes after
	Seed      uint64        // the fault sequence and the load's choices
	Sessions  int           // ssh sessions at a time (bounded load)
	Agents    int           // sshward-agent processes (≥ 2)
	FaultGap  time.Duration // mean time between two faults
	Faults    []string      // kinds to inject (default: all that can run here)
	Bin       string        // directory with the sshward binaries
	Dir       string        // working directory (default: a new temporary one)
	Keep      bool          // keep Dir after a run that passed
	JSON      bool          // summary as JSON on stdout
	StatusGap time.Duration // between two progress lines on stderr
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet(usage)
	var cfg config
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Minute, "how long load and faults run (the drain and the checks come after)")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the fault sequence and the load's choices (default: random, printed)")
	fs.IntVar(&cfg.Sessions, "sessions", 3, "ssh sessions at a time")
	fs.IntVar(&cfg.Agents, "agents", 3, "sshward-agent processes (at least 2)")
	fs.DurationVar(&cfg.FaultGap, "fault-gap", 10*time.Second, "mean time between two faults")
	faults := fs.String("faults", "", "comma-separated fault kinds (default all: "+strings.Join(allFaults, ",")+")")
	fs.StringVar(&cfg.Bin, "bin", "", "directory with sshward, sshward-ca, sshward-agent, sshward-playback (default: next to this binary)")
	fs.StringVar(&cfg.Dir, "dir", "", "working directory (default: a new temporary one, removed after a run that passed)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the working directory after a run that passed")
	fs.BoolVar(&cfg.JSON, "json", false, "print the summary as JSON on stdout")
	fs.DurationVar(&cfg.StatusGap, "status-every", 10*time.Second, "time between two progress lines on stderr")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("unexpected argument %q", pos[0])
	}
	switch {
	case cfg.Duration <= 0:
		return cli.Usagef("--duration must be positive")
	case cfg.Sessions < 1:
		return cli.Usagef("--sessions must be at least 1")
	case cfg.Agents < 2:
		return cli.Usagef("--agents must be at least 2 (one is killed while the others serve)")
	case cfg.FaultGap <= 0:
		return cli.Usagef("--fault-gap must be positive")
	}
	if *faults != "" {
		for f := range strings.SplitSeq(*faults, ",") {
			if !slices.Contains(allFaults, f) {
				return cli.Usagef("unknown fault kind %q (kinds: %s)", f, strings.Join(allFaults, ","))
			}
			cfg.Faults = append(cfg.Faults, f)
		}
	} else {
		cfg.Faults = slices.Clone(allFaults)
	}
	if cfg.Seed == 0 {
		var b [8]byte
		rand.Read(b[:])
		cfg.Seed = binary.LittleEndian.Uint64(b[:]) >> 1
	}
	if cfg.Bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		cfg.Bin = filepath.Dir(exe)
	}
	for _, b := range []string{"sshward", "sshward-ca", "sshward-agent", "sshward-playback"} {
		if _, err := os.Stat(filepath.Join(cfg.Bin, b)); err != nil {
			return fmt.Errorf("%s not found in %s: run make build first, or pass --bin", b, cfg.Bin)
		}
	}
	temp := cfg.Dir == ""
	if temp {
		if cfg.Dir, err = os.MkdirTemp("", "sshward-soak-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "soak: seed %d (repeat with --seed %d), %v of load, %d sessions at a time, %d agents; work dir %s\n",
		cfg.Seed, cfg.Seed, cfg.Duration, cfg.Sessions, cfg.Agents, cfg.Dir)
	sum, err := soak(ctx, cfg, stderr)
	if sum != nil {
		if cfg.JSON {
			if jerr := cli.JSON(stdout, sum); jerr != nil {
				return jerr
			}
		} else {
			sum.print(stdout)
		}
	}
	if err == nil && sum != nil {
		err = sum.verdict()
	}
	if err == nil && temp && !cfg.Keep {
		os.RemoveAll(cfg.Dir)
	} else if err != nil {
		fmt.Fprintf(stderr, "soak: logs and state kept in %s\n", cfg.Dir)
	}
	return err
}

// errFailed is the verdict of a soak that counted a loss; the summary
// already said which.
var errFailed = errors.New("the soak found lost, corrupted or duplicated recordings, unstored acknowledged writes or a broken audit chain (see the summary)")
