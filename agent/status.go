package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/recorder"
)

// Status is what `sshward-agent status` shows: the host certificate, the
// revocation cache and the spool. ReadStatus builds it from the data
// directory alone, without the spool's lock, so it works beside a running
// agent.
type Status struct {
	DataDir     string            `json:"data_dir"`
	Tier        string            `json:"tier,omitempty"`
	Joined      bool              `json:"joined"`
	HostCert    *HostCertStatus   `json:"host_cert,omitempty"`
	Revocations *RevocationStatus `json:"revocations,omitempty"`
	Spool       SpoolStatus       `json:"spool"`
	// Uploads is the shipper's queue: what the playback server has not
	// acknowledged yet, how old, and the last error.
	Uploads *recorder.ShipReport `json:"uploads"`
	// Unrecorded counts the sessions of an open tier that went on
	// unrecorded, and where their reports to the CA and the playback
	// server are (unrecorded.go).
	Unrecorded *UnrecordedStatus `json:"unrecorded"`
}

// HostCertStatus describes the host certificate.
type HostCertStatus struct {
	Serial      uint64    `json:"serial"`
	Names       []string  `json:"names"`
	ValidAfter  time.Time `json:"valid_after"`
	ValidBefore time.Time `json:"valid_before"`
	RenewAt     time.Time `json:"renew_at,omitzero"`
	ExpiresIn   string    `json:"expires_in"`
	Expired     bool      `json:"expired"`
}

// RevocationStatus describes the cached revocation list.
type RevocationStatus struct {
	Generation  uint64    `json:"generation"`
	GeneratedAt time.Time `json:"generated_at"`
	FetchedAt   time.Time `json:"fetched_at"`
	Serials     int       `json:"serials"`
	KeyIDs      int       `json:"key_ids"`
}

// SpoolStatus sums up the spool. Finished recordings wait there until the
// shipper has them acknowledged; Unfinished ones are being recorded, or
// were left by a crash and get repaired at the agent's next start.
type SpoolStatus struct {
	Dir        string `json:"dir"`
	Unfinished int    `json:"unfinished"`
	Finished   int    `json:"finished"`
	Incomplete int    `json:"incomplete"`
	Bytes      int64  `json:"bytes"`
	// SealedTo is how many age recipients the playback server named for
	// the spool (cached in DATA/spool-recipients; spoolkeys.go); 0: none
	// yet (plaintext unless --spool-recipients). Sealed counts the
	// recordings in the spool that are sealed.
	SealedTo   int              `json:"sealed_to"`
	Sealed     int              `json:"sealed"`
	Recordings []SpoolRecording `json:"recordings"`
}

// SpoolRecording is one recording in the spool.
type SpoolRecording struct {
	SessionID  string    `json:"session_id"`
	Identity   string    `json:"identity"`
	Principal  string    `json:"principal"`
	Tier       string    `json:"tier"`
	Kind       string    `json:"kind"`
	Command    string    `json:"command,omitempty"`
	Start      time.Time `json:"start"`
	Age        string    `json:"age"`
	Finished   bool      `json:"finished"`
	Complete   bool      `json:"complete"`
	Incomplete string    `json:"incomplete,omitempty"`
	CastBytes  int64     `json:"cast_bytes"`
	Sealed     bool      `json:"sealed"` // encrypted to the playback server's recipients
	Problem    string    `json:"problem,omitempty"`
}

// ReadStatus reads the state of an agent's data directory.
func ReadStatus(dataDir string, now time.Time) (*Status, error) {
	if _, err := os.Stat(dataDir); err != nil {
		return nil, fmt.Errorf("agent: status: %w", err)
	}
	st := &Status{DataDir: dataDir, Spool: SpoolStatus{Dir: SpoolDir(dataDir), Recordings: []SpoolRecording{}}}
	var meta identityFile
	if data, err := os.ReadFile(filepath.Join(dataDir, fileIdentity)); err == nil {
		if err := json.Unmarshal(data, &meta); err != nil {
			return nil, fmt.Errorf("agent: status: decode %s: %w", fileIdentity, err)
		}
		st.Tier = meta.Tier
	}
	certData, err := os.ReadFile(filepath.Join(dataDir, fileHostCert))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("agent: status: %w", err)
	default:
		pub, _, _, _, err := ssh.ParseAuthorizedKey(certData)
		cert, ok := pub.(*ssh.Certificate)
		if err != nil || !ok {
			return nil, fmt.Errorf("agent: status: %s is not a certificate", fileHostCert)
		}
		st.Joined = true
		before := time.Unix(int64(cert.ValidBefore), 0).UTC()
		st.HostCert = &HostCertStatus{
			Serial: cert.Serial, Names: cert.ValidPrincipals,
			ValidAfter: time.Unix(int64(cert.ValidAfter), 0).UTC(), ValidBefore: before,
			RenewAt: renewAt(cert).UTC(), ExpiresIn: before.Sub(now).Round(time.Second).String(),
			Expired: !certValid(cert, now),
		}
	}
	revs, err := loadRevocations(dataDir)
	if err != nil {
		return nil, fmt.Errorf("agent: status: %w", err)
	}
	if revs != nil {
		st.Revocations = &RevocationStatus{Generation: revs.list.Generation, GeneratedAt: revs.list.GeneratedAt,
			FetchedAt: revs.heardAt, Serials: len(revs.list.Serials), KeyIDs: len(revs.list.KeyIDs)}
	}
	if rs, err := cachedSpoolRecipients(dataDir); err == nil { // spoolkeys.go
		st.Spool.SealedTo = len(rs)
	}
	if err := readSpool(&st.Spool, now); err != nil {
		return nil, err
	}
	if st.Uploads, err = recorder.ReadShipStatus(st.Spool.Dir); err != nil {
		return nil, fmt.Errorf("agent: status: %w", err)
	}
	if st.Unrecorded, err = readUnrecordedStatus(dataDir); err != nil {
		return nil, fmt.Errorf("agent: status: %w", err)
	}
	return st, nil
}

// readSpool lists the recordings from their metadata files. It does not
// open the spool: that takes its lock (and repairs), which is the running
// agent's job.
func readSpool(sp *SpoolStatus, now time.Time) error {
	names, err := filepath.Glob(filepath.Join(sp.Dir, "*.json"))
	if err != nil {
		return fmt.Errorf("agent: status: %w", err)
	}
	for _, name := range names {
		id := strings.TrimSuffix(filepath.Base(name), ".json")
		if recorder.CheckSessionID(id) != nil {
			continue
		}
		r := SpoolRecording{SessionID: id}
		var m recorder.Metadata
		data, err := os.ReadFile(name)
		if err == nil {
			err = json.Unmarshal(data, &m)
		}
		if err != nil {
			r.Problem = "metadata unreadable: " + err.Error()
			sp.Recordings = append(sp.Recordings, r)
			continue
		}
		r.Identity, r.Principal, r.Tier, r.Kind, r.Command = m.Identity, m.Principal, m.Tier, m.Kind, m.Command
		r.Start, r.Age = m.Start.UTC(), now.Sub(m.Start).Round(time.Second).String()
		r.Finished, r.Complete, r.Incomplete, r.CastBytes = m.Finished, m.Complete, m.Incomplete, m.CastBytes
		if fi, err := os.Stat(filepath.Join(sp.Dir, id+".cast")); err == nil {
			r.CastBytes = fi.Size()
		}
		if _, err := os.Stat(filepath.Join(sp.Dir, id+".cast.state")); err == nil {
			r.Sealed = true
			sp.Sealed++
		}
		if r.Finished {
			sp.Finished++
			if !r.Complete {
				sp.Incomplete++
			}
		} else {
			sp.Unfinished++
		}
		sp.Bytes += r.CastBytes
		sp.Recordings = append(sp.Recordings, r)
	}
	sort.Slice(sp.Recordings, func(i, j int) bool { return sp.Recordings[i].Start.Before(sp.Recordings[j].Start) })
	return nil
}

// WriteText prints the status for people.
func (st *Status) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "data directory:\t%s\n", st.DataDir)
	if !st.Joined {
		fmt.Fprintf(tw, "host certificate:\tnone (not joined: start the agent with --join-token)\n")
	} else {
		hc := st.HostCert
		state := "expires in " + hc.ExpiresIn
		if hc.Expired {
			state = "EXPIRED"
		}
		fmt.Fprintf(tw, "tier:\t%s\n", st.Tier)
		fmt.Fprintf(tw, "host certificate:\tserial %d, names %s, valid until %s (%s), renews at %s\n",
			hc.Serial, strings.Join(hc.Names, ","), hc.ValidBefore.Format(time.RFC3339), state, hc.RenewAt.Format(time.RFC3339))
	}
	if r := st.Revocations; r != nil {
		fmt.Fprintf(tw, "revocation list:\tgeneration %d, %d serials, %d key ids, fetched %s\n",
			r.Generation, r.Serials, r.KeyIDs, r.FetchedAt.Format(time.RFC3339))
	} else {
		fmt.Fprintf(tw, "revocation list:\tnone cached yet\n")
	}
	sp := st.Spool
	fmt.Fprintf(tw, "spool:\t%s: %d unfinished (live, or left by a crash until the next start), %d finished awaiting upload (%d incomplete), %d bytes\n",
		sp.Dir, sp.Unfinished, sp.Finished, sp.Incomplete, sp.Bytes)
	if sp.SealedTo > 0 {
		fmt.Fprintf(tw, "spool encryption:\tnew recordings sealed to the playback server's %d recipients; %d of %d in the spool sealed\n", sp.SealedTo, sp.Sealed, len(sp.Recordings))
	} else {
		fmt.Fprintf(tw, "spool encryption:\tno recipients learned from the playback server yet: plaintext unless --spool-recipients is given; %d of %d in the spool sealed\n", sp.Sealed, len(sp.Recordings))
	}
	if u := st.Uploads; u != nil && u.URL != "" {
		fmt.Fprintf(tw, "uploads:\tto %s: %d pending (status as of %s)\n", u.URL, len(u.Recordings), u.UpdatedAt.Format(time.RFC3339))
	} else {
		fmt.Fprintf(tw, "uploads:\tno playback server yet: recordings stay in the spool\n")
	}
	if u := st.Unrecorded; u != nil && u.Count > 0 {
		fmt.Fprintf(tw, "UNRECORDED SESSIONS:\t%d (open tier: went on without recording); reports not yet delivered: %d to the CA, %d to playback\n",
			u.Count, u.PendingCA, u.PendingPlayback)
	} else {
		fmt.Fprintf(tw, "unrecorded sessions:\tnone\n")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if u := st.Unrecorded; u != nil && len(u.Last) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "\nUNRECORDED SESSION\tAT\tUSER\tPRINCIPAL\tTIER\tPHASE\tREASON\tCA\tPLAYBACK\n")
		for _, r := range u.Last {
			e := r.Event
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.SessionID, e.At.UTC().Format(time.RFC3339), e.Identity,
				e.Principal, e.Tier, e.Phase, e.Reason, truncate(r.CA.describe(), 50), truncate(r.Playback.describe(), 50))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if u := st.Uploads; u != nil && len(u.Recordings) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "\nPENDING UPLOAD\tAGE\tSHIPPED\tPENDING\tATTEMPTS\tLAST ERROR\n")
		for _, r := range u.Recordings {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", r.SessionID, r.Age.Round(time.Second), r.Shipped, r.Pending, r.Attempts, truncate(r.LastError, 60))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(sp.Recordings) == 0 {
		return nil
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nSESSION\tSTATE\tAGE\tUSER\tPRINCIPAL\tTIER\tKIND\tBYTES\tCOMMAND\n")
	for _, r := range sp.Recordings {
		state := "live"
		switch {
		case r.Problem != "":
			state = r.Problem
		case r.Finished && r.Complete:
			state = "finished"
		case r.Finished:
			state = "incomplete"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.SessionID, state, r.Age, r.Identity,
			r.Principal, r.Tier, r.Kind, r.CastBytes, truncate(r.Command, 40))
	}
	return tw.Flush()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
