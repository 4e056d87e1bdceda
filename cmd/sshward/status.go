package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/cmd/internal/cli"
)

type statusCert struct {
	Tier        string    `json:"tier"`
	Serial      uint64    `json:"serial"`
	KeyID       string    `json:"key_id"`
	Principals  []string  `json:"principals"`
	ValidBefore time.Time `json:"valid_before"`
	Expired     bool      `json:"expired"`
	Certificate string    `json:"certificate"`
}

type statusResult struct {
	CA          string    `json:"ca,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	User        string    `json:"user,omitempty"`
	Groups      []string  `json:"groups,omitempty"`
	MFA         bool      `json:"mfa"`
	LoggedIn    bool      `json:"logged_in"`
	SessionEnds time.Time `json:"session_expires_at,omitzero"`
	Tiers       []string  `json:"tiers,omitempty"`
	// Access: per tier, whether this session can get it now, and why not.
	Access  []api.TierAccess `json:"access,omitempty"`
	Certs   []statusCert     `json:"certs"`
	Problem string           `json:"problem,omitempty"`
}

func (e *env) cmdStatus(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward status [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	h, err := e.home()
	if err != nil {
		return err
	}
	res := statusResult{Certs: []statusCert{}}
	if cfg, err := h.loadConfig(); err == nil {
		res.CA, res.Fingerprint = cfg.CA, cfg.Fingerprint
	}
	now := e.now()
	if s, err := h.loadSession(); err == nil && now.Before(s.ExpiresAt) {
		res.User, res.Groups, res.MFA, res.SessionEnds, res.LoggedIn = s.User, s.Groups, s.MFA, s.ExpiresAt, true
		// Ask the CA too: the session may have been revoked there.
		if c, _, err := h.client(s.Token); err == nil {
			if info, err := c.Session(ctx); err == nil {
				res.Tiers, res.Access = info.Tiers, info.Access
			} else {
				res.LoggedIn, res.Problem = false, err.Error()
			}
		}
	}
	matches, _ := filepath.Glob(filepath.Join(h.dir, "keys", "*-cert.pub"))
	sort.Strings(matches)
	for _, m := range matches {
		c, err := readCert(m)
		if err != nil {
			continue
		}
		vb := time.Unix(int64(c.ValidBefore), 0).UTC()
		res.Certs = append(res.Certs, statusCert{
			Tier: strings.TrimSuffix(filepath.Base(m), "-cert.pub"), Serial: c.Serial, KeyID: c.KeyId,
			Principals: c.ValidPrincipals, ValidBefore: vb, Expired: !now.Before(vb), Certificate: m,
		})
	}
	if *asJSON {
		return cli.JSON(e.stdout, res)
	}
	w := e.stdout
	if res.CA == "" {
		fmt.Fprintln(w, "not set up: run sshward login --ca URL --fingerprint FP")
		return nil
	}
	fmt.Fprintf(w, "CA:       %s (root %s…)\n", res.CA, short(res.Fingerprint, 16))
	switch {
	case res.LoggedIn:
		mfa := "no"
		if res.MFA {
			mfa = "yes"
		}
		fmt.Fprintf(w, "user:     %s (groups: %s; MFA: %s)\n", res.User, strings.Join(res.Groups, ", "), mfa)
		fmt.Fprintf(w, "session:  valid until %s (%s left)\n", res.SessionEnds.Local().Format("Mon 15:04"), res.SessionEnds.Sub(now).Round(time.Minute))
		switch {
		case len(res.Access) > 0:
			fmt.Fprintln(w, "tiers:")
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			for _, a := range res.Access {
				state := "yes, as " + strings.Join(a.Principals, ",")
				if !a.Available {
					state = "no: " + strings.Join(a.Reasons, "; ")
				}
				fmt.Fprintf(tw, "  %s\t%s\n", a.Tier, state)
			}
			tw.Flush()
		case len(res.Tiers) > 0: // a CA that does not answer per tier
			fmt.Fprintf(w, "tiers:    %s\n", strings.Join(res.Tiers, ", "))
		default:
			fmt.Fprintln(w, "tiers:    none (your groups grant no tier)")
		}
	case res.Problem != "":
		fmt.Fprintf(w, "session:  not usable: %s\n", res.Problem)
	default:
		fmt.Fprintln(w, "session:  none (run sshward login)")
	}
	if len(res.Certs) == 0 {
		fmt.Fprintln(w, "certs:    none (sshward cert --tier TIER)")
		return nil
	}
	fmt.Fprintln(w, "certs:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range res.Certs {
		state := fmt.Sprintf("valid until %s (%s left)", c.ValidBefore.Local().Format("15:04:05"), c.ValidBefore.Sub(now).Round(time.Second))
		if c.Expired {
			state = fmt.Sprintf("expired %s ago", now.Sub(c.ValidBefore).Round(time.Second))
		}
		fmt.Fprintf(tw, "  %s\tserial %d\t%s\t%s\n", c.Tier, c.Serial, strings.Join(c.Principals, ","), state)
	}
	return tw.Flush()
}

func short(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
