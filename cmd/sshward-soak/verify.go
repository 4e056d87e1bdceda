package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/sshward/sshward/cmd/internal/netwait"
	"github.com/sshward/sshward/recorder"
)

// drainSpools waits, bounded, until every agent's spool has shipped all it
// holds (the agent removes a recording once playback acknowledged all of
// it); it returns the hosts still holding recordings.
func (s *system) drainSpools(ctx context.Context, limit time.Duration) []string {
	var left []string
	netwait.Poll(ctx, limit, func() bool {
		left = left[:0]
		for _, a := range s.agents {
			out, err := s.run.run(ctx, "", "", "sshward-agent", "status", "--data", a.data, "--json")
			var st struct {
				Spool struct {
					Recordings []json.RawMessage `json:"recordings"`
				} `json:"spool"`
			}
			if err != nil || json.Unmarshal([]byte(out), &st) != nil || len(st.Spool.Recordings) > 0 {
				left = append(left, fmt.Sprintf("%s (%d recordings)", a.host, len(st.Spool.Recordings)))
			}
		}
		return len(left) == 0
	})
	return left
}

// recording is one session as the auditor finds it on the playback server.
type recording struct {
	ID        string `json:"id"`
	Host      string `json:"host"`
	Tier      string `json:"tier"`
	Live      bool   `json:"live"`
	Complete  bool   `json:"complete"`
	Integrity string `json:"integrity"`

	lines   map[string]map[int]int // tag → marker line → times in the output
	problem string                 // export failed or the cast does not parse
}

// recordings lists every session as the auditor (sshward sessions --all
// --json), waiting, bounded, until none is live, then exports each one
// (sshward export, which refuses a recording that fails its integrity
// check) and reads the marker lines in its output events.
func (s *system) recordings(ctx context.Context, limit time.Duration) ([]*recording, error) {
	var list []*recording
	var lerr error
	err := netwait.Poll(ctx, limit, func() bool {
		out, err := s.run.run(ctx, s.auditor.home, "", "sshward", "sessions", "--all", "--json")
		if err != nil {
			lerr = err
			return false
		}
		list = nil
		if lerr = json.Unmarshal([]byte(out), &list); lerr != nil {
			return false
		}
		for _, r := range list {
			if r.Live {
				return false
			}
		}
		return true
	})
	if err != nil {
		return list, fmt.Errorf("the playback server's sessions did not all end: %w (%v)", err, lerr)
	}
	for _, r := range list {
		cast, err := s.run.run(ctx, s.auditor.home, "", "sshward", "export", r.ID)
		if err != nil {
			r.problem = err.Error()
			continue
		}
		if r.lines, err = castMarkers(strings.NewReader(cast)); err != nil {
			r.problem = err.Error()
		}
	}
	return list, nil
}

// castMarkers counts the marker lines in a cast's output events, read as
// one stream (a line may span events).
func castMarkers(r io.Reader) (map[string]map[int]int, error) {
	rd, err := recorder.NewReader(r)
	if err != nil {
		return nil, err
	}
	var out strings.Builder
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if ev.Code == recorder.CodeOutput {
			out.WriteString(ev.Data)
		}
	}
	lines := map[string]map[int]int{}
	for _, m := range markerRE.FindAllStringSubmatch(out.String(), -1) {
		n, _ := strconv.Atoi(m[2])
		if lines[m[1]] == nil {
			lines[m[1]] = map[int]int{}
		}
		lines[m[1]][n]++
	}
	return lines, nil
}

// auditResult is sshward-ca / sshward-playback audit verify --json.
type auditResult struct {
	OK      bool   `json:"ok"`
	Records int    `json:"records"`
	Error   string `json:"error,omitempty"`
}

func (s *system) auditVerify(ctx context.Context, bin, dir string) auditResult {
	out, err := s.run.run(ctx, "", "", bin, "audit", "verify", "--dir", dir, "--json")
	var res auditResult
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil {
		res.OK, res.Error = false, fmt.Sprintf("%v %v", err, jerr)
	}
	return res
}

// stored reads, from the stopped CA's audit log, the serials of the
// certificates it issued and the approvals it recorded.
func (s *system) stored(ctx context.Context) (serials map[uint64]bool, approvals map[string]bool, err error) {
	out, err := s.run.run(ctx, "", "", "sshward-ca", "audit", "list", "--dir", s.caDir, "--json")
	if err != nil {
		return nil, nil, err
	}
	var evs []struct {
		Type      string `json:"type"`
		Actor     string `json:"actor"`
		Outcome   string `json:"outcome"`
		Serial    uint64 `json:"serial"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		return nil, nil, fmt.Errorf("sshward-ca audit list --json: %w", err)
	}
	serials, approvals = map[uint64]bool{}, map[string]bool{}
	for _, ev := range evs {
		if ev.Outcome != "ok" {
			continue
		}
		switch ev.Type {
		case "cert.issue":
			serials[ev.Serial] = true
		case "request.approve":
			approvals[ev.RequestID+"/"+ev.Actor] = true
		}
	}
	return serials, approvals, nil
}
