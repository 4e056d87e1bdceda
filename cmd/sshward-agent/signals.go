package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sshward/sshward/agent"
)

// Signals, as sshd treats them:
//
//	SIGTERM, SIGINT  stop: sessions end with "the host agent stopped" and
//	                 exit status agent.ExitAgentStopped; their recordings
//	                 are finished, marked complete=false "agent stopped".
//	SIGHUP           restart: the same with "agent restarted", then the
//	                 agent executes itself again with the same arguments
//	                 (a new binary at the same path is picked up).
//
// Later signals during the stop are ignored: the stop is bounded by the
// sessions' end grace.

// signalContext is cancelled by the first SIGTERM, SIGINT or SIGHUP, with
// agent.ErrShuttingDown or agent.ErrRestarting as its cause.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			if sig == syscall.SIGHUP {
				cancel(agent.ErrRestarting)
			} else {
				cancel(agent.ErrShuttingDown)
			}
		case <-done:
		}
	}()
	return ctx, func() {
		close(done)
		signal.Stop(ch)
		cancel(nil)
	}
}

// restart replaces the process with a fresh start of the agent binary and
// the same arguments and environment. It returns only on failure.
func restart(stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("restart: find the agent binary: %w", err)
	}
	// Linux names a replaced binary "/path (deleted)": start the new one.
	exe = strings.TrimSuffix(exe, " (deleted)")
	fmt.Fprintf(stderr, "%s: restarting (SIGHUP)\n", prog)
	if err := syscall.Exec(exe, os.Args, os.Environ()); err != nil {
		return fmt.Errorf("restart: exec %s: %w", exe, err)
	}
	return nil
}
