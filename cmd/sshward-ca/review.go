package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/server"
	"github.com/sshward/sshward/cmd/internal/cli"
)

// parseSince reads --since: days ("90d"), a Go duration ("2160h") or a
// date (2026-01-31), back from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n > 0 {
			return now.AddDate(0, 0, -n), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q is neither days (90d), a duration (720h) nor a date (2026-01-31)", s)
}

func (e *env) cmdReview(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "signoff" {
		return e.cmdReviewSignOff(ctx, args[1:])
	}
	fs := cli.NewFlagSet("sshward-ca review --dir DIR [--since 90d] [--json|--csv]")
	dir := e.dirFlag(fs)
	sinceFlag := fs.String("since", "90d", "the review period: days back (90d), a duration or a date")
	asJSON := fs.Bool("json", false, "print JSON")
	asCSV := fs.Bool("csv", false, "print CSV (for a spreadsheet)")
	unusedOnly := fs.Bool("unused", false, "only entitlements nobody used in the period")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	since, err := parseSince(*sinceFlag, time.Now())
	if err != nil {
		return cli.Usagef("%s", err)
	}
	return e.withAdmin(ctx, *dir, func(a admin) error {
		lines, err := a.Review(ctx, since)
		if err != nil {
			return err
		}
		if *unusedOnly {
			kept := lines[:0]
			for _, l := range lines {
				if l.Unused {
					kept = append(kept, l)
				}
			}
			lines = kept
		}
		switch {
		case *asJSON:
			if lines == nil {
				lines = []ca.ReviewLine{}
			}
			return cli.JSON(e.stdout, lines)
		case *asCSV:
			w := csv.NewWriter(e.stdout)
			w.Write([]string{"user", "tier", "known", "entitled", "groups", "certificates", "last_issued", "requests", "requests_used",
				"approvals_given", "unused", "decision", "reviewer", "reason"})
			for _, l := range lines {
				dec, who, why := "", "", ""
				if l.SignOff != nil {
					dec, who, why = l.SignOff.Decision, l.SignOff.Reviewer, l.SignOff.Reason
				}
				w.Write([]string{l.User, l.Tier, strconv.FormatBool(l.Known), strconv.FormatBool(l.Entitled), strings.Join(l.Groups, " "),
					strconv.Itoa(l.Certificates), timeOrEmpty(l.LastIssued), strconv.Itoa(l.Requests), strconv.Itoa(l.RequestsUsed),
					strconv.Itoa(l.ApprovalsGiven), strconv.FormatBool(l.Unused), dec, who, why})
			}
			w.Flush()
			return w.Error()
		}
		fmt.Fprintf(e.stdout, "access review since %s (%d lines)\n", since.Format(time.DateOnly), len(lines))
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USER\tTIER\tVIA\tCERTS\tLAST USED\tREQUESTS\tAPPROVED\tNOTE\tSIGN-OFF")
		unused := 0
		for _, l := range lines {
			via := strings.Join(l.Groups, ",")
			if !l.Entitled {
				via = "(not entitled now)"
			}
			note := ""
			switch {
			case l.Unused:
				note = "unused: candidate to remove"
				unused++
			case !l.Known:
				note = "not a local user"
			}
			signed := "-"
			if l.SignOff != nil {
				signed = l.SignOff.Decision + " by " + l.SignOff.Reviewer
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\t%s\n", l.User, l.Tier, via, l.Certificates, dash(dateOrEmpty(l.LastIssued)),
				l.Requests, l.ApprovalsGiven, dash(note), signed)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if unused > 0 {
			fmt.Fprintf(e.stdout, "%d entitlements unused in the period; sign each line off: sshward-ca review signoff --user U --tier T --decision keep|remove --reviewer NAME\n", unused)
		}
		return nil
	})
}

func (e *env) cmdReviewSignOff(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward-ca review signoff --dir DIR --user U --tier T --decision keep|remove --reviewer NAME [--reason TEXT]")
	dir := e.dirFlag(fs)
	sinceFlag := fs.String("since", "90d", "the review period the line belongs to")
	user := fs.String("user", "", "the user of the line")
	tier := fs.String("tier", "", "the tier of the line")
	decision := fs.String("decision", "", "keep or remove")
	reviewer := fs.String("reviewer", "", "who decides (recorded in the audit log)")
	reason := fs.String("reason", "", "why")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *user == "" || *tier == "" || *decision == "" || *reviewer == "" {
		return cli.Usagef("review signoff needs --user, --tier, --decision and --reviewer")
	}
	since, err := parseSince(*sinceFlag, time.Now())
	if err != nil {
		return cli.Usagef("%s", err)
	}
	return e.withAdmin(ctx, *dir, func(a admin) error {
		res, err := a.SignOff(ctx, ca.ReviewSignOff{User: *user, Tier: *tier, Decision: *decision, Reviewer: *reviewer, Reason: *reason}, since)
		if err != nil {
			return err
		}
		if *asJSON {
			return cli.JSON(e.stdout, res)
		}
		fmt.Fprintf(e.stdout, "signed off %s/%s: %s by %s (in the audit log)\n", res.User, res.Tier, res.Decision, res.Reviewer)
		if res.Decision == ca.DecisionRemove {
			fmt.Fprintf(e.stdout, "to act on it: change %s's groups, or sshward-ca users disable %s\n", res.User, res.User)
		}
		return nil
	})
}

func timeOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func dateOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format(time.DateOnly)
}

func (s *socketAdmin) Review(ctx context.Context, since time.Time) ([]ca.ReviewLine, error) {
	var out []ca.ReviewLine
	return out, s.call(ctx, http.MethodGet, server.AdminReview+"?since="+url.QueryEscape(since.UTC().Format(time.RFC3339)), nil, &out)
}

func (s *socketAdmin) SignOff(ctx context.Context, so ca.ReviewSignOff, since time.Time) (*ca.ReviewSignOff, error) {
	var out ca.ReviewSignOff
	return &out, s.call(ctx, http.MethodPost, server.AdminReview+"/signoff", server.ReviewSignOffRequest{SignOff: so, Since: since}, &out)
}
