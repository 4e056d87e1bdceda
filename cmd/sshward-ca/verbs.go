package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/server"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/cmd/internal/cli"
)

// dirFlag adds --dir, defaulting to $SSHWARD_CA_DIR.
func (e *env) dirFlag(fs *flag.FlagSet) *string {
	return fs.String("dir", e.getenv("SSHWARD_CA_DIR"), "CA directory (default $SSHWARD_CA_DIR)")
}

func (e *env) withAdmin(ctx context.Context, dir string, fn func(admin) error) error {
	// Offline, the passphrase (when $SSHWARD_CA_PASSPHRASE has it) lets
	// users add encrypt a new TOTP secret at once; without it the secret
	// waits in clear until the CA next starts.
	var pass []byte
	if p := e.getenv("SSHWARD_CA_PASSPHRASE"); p != "" {
		pass = []byte(p)
	}
	a, err := openAdmin(ctx, layout{dir}, pass)
	if err != nil {
		return err
	}
	defer a.Close()
	return fn(a)
}

func (e *env) cmdUsers(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmtUsage("users needs a verb: add, list, remove, disable, enable or passwd")
	}
	verb, args := args[0], args[1:]
	fs := cli.NewFlagSet("sshward-ca users " + verb)
	dir := e.dirFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	switch verb {
	case "add":
		groups := fs.String("groups", "", "comma-separated groups (engineers, sre, oncall, incident-commanders, auditors)")
		totp := fs.Bool("totp", false, "enrol a TOTP secret (counts as MFA); printed once")
		pwStdin := fs.Bool("password-stdin", false, "read the password from the first line of stdin")
		pos, err := cli.Parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmtUsage("users add needs exactly one NAME")
		}
		if !*pwStdin {
			return fmtUsage("users add needs --password-stdin (passwords are never flag values)")
		}
		pw, err := cli.ReadSecretLine(e.stdin)
		if err != nil {
			return fmt.Errorf("read password: %w", err)
		}
		return e.withAdmin(ctx, *dir, func(a admin) error {
			res, err := a.AddUser(ctx, ca.AddUserRequest{Name: pos[0], Groups: strings.Split(*groups, ","), Password: pw, TOTP: *totp})
			if err != nil {
				return err
			}
			if *asJSON {
				return cli.JSON(e.stdout, res)
			}
			fmt.Fprintf(e.stdout, "added %s (groups: %s)\n", res.Name, strings.Join(res.Groups, ", "))
			if res.TOTPSecret != "" {
				fmt.Fprintf(e.stdout, "TOTP secret (add it to an authenticator app; shown once): %s\n  %s\n", res.TOTPSecret, res.TOTPURL)
			}
			if res.TOTPStoredInClear {
				fmt.Fprintln(e.stderr, "note: without $SSHWARD_CA_PASSPHRASE the TOTP secret is stored unencrypted until sshward-ca serve next starts (it encrypts it then)")
			}
			return nil
		})
	case "list":
		if _, err := cli.Parse(fs, args); err != nil {
			return err
		}
		return e.withAdmin(ctx, *dir, func(a admin) error {
			us, err := a.ListUsers(ctx)
			if err != nil {
				return err
			}
			if *asJSON {
				if us == nil {
					us = []ca.UserInfo{}
				}
				return cli.JSON(e.stdout, us)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tGROUPS\tTOTP\tLOCKED UNTIL\tDISABLED")
			for _, u := range us {
				locked := "-"
				if time.Now().Before(u.LockedUntil) {
					locked = u.LockedUntil.Local().Format(time.Kitchen)
				}
				disabled := "-"
				if !u.DisabledAt.IsZero() {
					disabled = u.DisabledAt.Local().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", u.Name, strings.Join(u.Groups, ","), u.TOTP, locked, disabled)
			}
			return tw.Flush()
		})
	case "remove":
		pos, err := cli.Parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmtUsage("users remove needs exactly one NAME")
		}
		return e.withAdmin(ctx, *dir, func(a admin) error {
			if err := a.RemoveUser(ctx, pos[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "removed %s; their unexpired certificates and CA sessions are revoked\n", pos[0])
			return nil
		})
	case "disable":
		reason := fs.String("reason", "", "why, for the audit log")
		pos, err := cli.Parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmtUsage("users disable needs exactly one NAME")
		}
		return e.withAdmin(ctx, *dir, func(a admin) error {
			res, err := a.DisableUser(ctx, pos[0], *reason)
			if err != nil {
				return err
			}
			if *asJSON {
				return cli.JSON(e.stdout, res)
			}
			fmt.Fprintf(e.stdout, "disabled %s: %d certificate(s) and %d CA session(s) revoked; sshward-ca users enable %s lets them log in again\n",
				res.Name, len(res.Serials), res.Sessions, res.Name)
			return nil
		})
	case "enable":
		pos, err := cli.Parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmtUsage("users enable needs exactly one NAME")
		}
		return e.withAdmin(ctx, *dir, func(a admin) error {
			if err := a.EnableUser(ctx, pos[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "enabled %s: they can log in again (certificates revoked while disabled stay revoked)\n", pos[0])
			return nil
		})
	case "passwd":
		pwStdin := fs.Bool("password-stdin", false, "read the new password from the first line of stdin")
		pos, err := cli.Parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 || !*pwStdin {
			return fmtUsage("users passwd needs one NAME and --password-stdin")
		}
		pw, err := cli.ReadSecretLine(e.stdin)
		if err != nil {
			return fmt.Errorf("read password: %w", err)
		}
		return e.withAdmin(ctx, *dir, func(a admin) error {
			if err := a.SetPassword(ctx, pos[0], pw); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "password of %s changed\n", pos[0])
			return nil
		})
	}
	return fmtUsage("unknown users verb %q (add, list, remove, disable, enable, passwd)", verb)
}

func (e *env) cmdTrust(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward-ca trust --dir DIR --tier T | --hosts")
	dir := e.dirFlag(fs)
	tier := fs.String("tier", "", "print the TrustedUserCAKeys lines for hosts of this tier")
	hosts := fs.Bool("hosts", false, "print the @cert-authority known_hosts line")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	l := layout{*dir}
	if err := l.check(); err != nil {
		return err
	}
	if (*tier == "") == !*hosts {
		return fmtUsage("trust needs exactly one of --tier T or --hosts")
	}
	// On etcd the key set is the shared store's, whichever replica rotated.
	ks, err := openKeySource(ctx, l)
	if err != nil {
		return err
	}
	defer ks.Close()
	if *hosts {
		// During a host-CA rotation's overlap, both keys (rotate.go).
		lines, err := ks.lines(ctx, ca.HostKey, time.Now())
		if err != nil {
			return err
		}
		for _, line := range lines {
			fmt.Fprintf(e.stdout, "@cert-authority * %s\n", line)
		}
		return nil
	}
	pol, err := loadPolicy(l.policy())
	if err != nil {
		return err
	}
	if _, ok := pol.Tier(*tier); !ok {
		return fmt.Errorf("unknown tier %q (known: %s)", *tier, strings.Join(pol.TierNames(), ", "))
	}
	// A host of tier trusts its own user CA and every tier trusted on it.
	// During a key rotation's overlap, both keys of a tier (rotate.go).
	for _, t := range pol.HostTrust(*tier) {
		lines, err := ks.lines(ctx, ca.UserKey(t), time.Now())
		if err != nil {
			return err
		}
		for _, line := range lines {
			fmt.Fprintln(e.stdout, line)
		}
	}
	return nil
}

func (e *env) cmdJoinToken(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward-ca join-token --dir DIR --host NAME --tier T | --playback NAME")
	dir := e.dirFlag(fs)
	var hosts cli.StringList
	fs.Var(&hosts, "host", "host name(s) the certificate will carry (comma-separated or repeated)")
	tier := fs.String("tier", "", "tier of the host")
	playback := fs.String("playback", "", "make a token for a playback server of this name instead")
	ttl := fs.Duration("ttl", ca.DefaultJoinTokenTTL, "how long the token stays valid")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	req := ca.JoinTokenRequest{Kind: "host", Names: hosts, Tier: *tier, TTL: *ttl}
	switch {
	case *playback != "" && len(hosts) > 0:
		return fmtUsage("join-token takes --host or --playback, not both")
	case *playback != "":
		req = ca.JoinTokenRequest{Kind: "playback", Names: []string{*playback}, TTL: *ttl}
	case len(hosts) == 0:
		return fmtUsage("join-token needs --host NAME (or --playback NAME)")
	case *tier == "":
		return fmtUsage("join-token --host needs --tier T")
	}
	return e.withAdmin(ctx, *dir, func(a admin) error {
		res, err := a.NewJoinToken(ctx, req)
		if err != nil {
			return err
		}
		if *asJSON {
			return cli.JSON(e.stdout, res)
		}
		fmt.Fprintln(e.stdout, res.Token)
		fmt.Fprintf(e.stderr, "one-time token for %s %s, valid until %s\n", res.Kind, strings.Join(res.Names, ","), res.ExpiresAt.Local().Format(time.RFC3339))
		return nil
	})
}

func (e *env) cmdRevoke(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward-ca revoke --dir DIR --serial N | --key-id ID | --user NAME")
	dir := e.dirFlag(fs)
	serial := fs.String("serial", "", "certificate serial")
	keyID := fs.String("key-id", "", "certificate key id (exact)")
	user := fs.String("user", "", "revoke every unexpired certificate and CA session of this user")
	tier := fs.String("tier", "", "tier, when the serial or key id was not issued by this CA")
	reason := fs.String("reason", "", "why (kept in the audit log)")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	req := ca.RevokeRequest{KeyID: *keyID, User: *user, Tier: *tier, Reason: *reason}
	if *serial != "" {
		n, err := strconv.ParseUint(*serial, 10, 64)
		if err != nil || n == 0 {
			return fmtUsage("--serial %q is not a certificate serial (a positive number)", *serial)
		}
		req.Serial = n
	}
	return e.withAdmin(ctx, *dir, func(a admin) error {
		res, err := a.Revoke(ctx, req)
		if err != nil {
			return err
		}
		if *asJSON {
			return cli.JSON(e.stdout, res)
		}
		for _, s := range res.Serials {
			fmt.Fprintf(e.stdout, "revoked serial %d\n", s)
		}
		for _, k := range res.KeyIDs {
			fmt.Fprintf(e.stdout, "revoked key id %q\n", k)
		}
		if res.Sessions > 0 {
			fmt.Fprintf(e.stdout, "revoked %d CA session(s) of %s\n", res.Sessions, *user)
		}
		if len(res.Serials)+len(res.KeyIDs)+res.Sessions == 0 {
			fmt.Fprintln(e.stdout, "nothing to revoke")
		}
		if len(res.Tiers) > 0 {
			fmt.Fprintf(e.stdout, "KRLs changed for: %s\n", strings.Join(res.Tiers, ", "))
		}
		return nil
	})
}

func (e *env) cmdAudit(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmtUsage("audit needs a verb: list or verify")
	}
	verb, args := args[0], args[1:]
	fs := cli.NewFlagSet("sshward-ca audit " + verb + " --dir DIR")
	dir := e.dirFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	switch verb {
	case "list":
		typ := fs.String("type", "", "only events of this type (login, cert.issue, host.join, revoke …)")
		after := fs.Uint64("after", 0, "only events after this sequence number")
		limit := fs.Int("limit", 0, "at most this many events (0: all)")
		if _, err := cli.Parse(fs, args); err != nil {
			return err
		}
		return e.withAdmin(ctx, *dir, func(a admin) error {
			evs, note, err := e.auditEvents(ctx, *dir, a, store.AuditFilter{AfterSeq: *after, Limit: *limit, Type: *typ})
			if err != nil {
				return err
			}
			if note != "" {
				fmt.Fprintln(e.stderr, note)
			}
			if *asJSON {
				if evs == nil {
					evs = []store.AuditEvent{}
				}
				return cli.JSON(e.stdout, evs)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTIME\tTYPE\tACTOR\tTIER\tOUTCOME\tDETAIL")
			for _, ev := range evs {
				detail := ev.Reason
				if ev.Serial != 0 {
					detail = strings.TrimSpace(fmt.Sprintf("serial=%d %s", ev.Serial, detail))
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Seq, ev.Time.Local().Format("2006-01-02 15:04:05"), ev.Type, ev.Actor, dash(ev.Tier), ev.Outcome, truncate(detail, 60))
			}
			return tw.Flush()
		})
	case "verify":
		dbPath := fs.String("db", "", "verify this store file instead (e.g. a copy or a backup)")
		fromS3 := fs.Bool("from-s3", false, "verify the audit archive in object storage (audit.archive.s3 of config.yaml) from the bucket alone")
		if _, err := cli.Parse(fs, args); err != nil {
			return err
		}
		if *fromS3 {
			return e.verifyAuditArchive(ctx, *dir, *asJSON)
		}
		var res struct {
			server.VerifyResult
			Segments *int `json:"segments,omitempty"` // checked in the archive, when records were pruned
		}
		if *dbPath != "" {
			res.VerifyResult = server.VerifyResultOf(store.VerifyFile(ctx, *dbPath))
		} else if err := e.withAdmin(ctx, *dir, func(a admin) error {
			res.VerifyResult = a.VerifyAudit(ctx)
			if !res.OK || res.Archived == nil {
				return nil
			}
			// The start of the chain is in the archive: check it there
			// and the link to the store's part.
			n, err := e.verifyArchivedPart(ctx, *dir, a, res.VerifyResult)
			if err != nil {
				res.VerifyResult = server.VerifyResultOf(store.AuditReport{Records: res.Records, Head: res.Head, Archived: *res.Archived}, err)
			}
			res.Segments = &n
			return nil
		}); err != nil {
			return err
		}
		switch {
		case *asJSON:
			if err := cli.JSON(e.stdout, res); err != nil {
				return err
			}
		case res.OK && res.Archived != nil && res.Segments != nil:
			fmt.Fprintf(e.stdout, "audit chain intact: %d records, head %s; records 1-%d from %d archived segments, the rest from the store\n",
				res.Records, shortHash(res.Head), res.Archived.Seq, *res.Segments)
		case res.OK && res.Archived != nil:
			fmt.Fprintf(e.stdout, "audit chain intact from record %d on: %d records, head %s; records 1-%d are archived (not checked here: audit verify --dir DIR)\n",
				res.Archived.Seq+1, res.Records, shortHash(res.Head), res.Archived.Seq)
		case res.OK:
			fmt.Fprintf(e.stdout, "audit chain intact: %d records, head %s\n", res.Records, shortHash(res.Head))
		}
		if !res.OK {
			return fmt.Errorf("audit chain broken: %s", res.Error)
		}
		return nil
	}
	return fmtUsage("unknown audit verb %q (list, verify)", verb)
}

func (e *env) cmdSessions(ctx context.Context, args []string) error {
	fs := cli.NewFlagSet("sshward-ca sessions --dir DIR")
	dir := e.dirFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	return e.withAdmin(ctx, *dir, func(a admin) error {
		ss, err := a.Sessions(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			if ss == nil {
				ss = []store.Session{}
			}
			return cli.JSON(e.stdout, ss)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USER\tSOURCE\tMFA\tCREATED\tEXPIRES\tSTATE")
		now := time.Now()
		for _, s := range ss {
			state := "live"
			switch {
			case !s.RevokedAt.IsZero():
				state = "revoked"
			case !now.Before(s.ExpiresAt):
				state = "expired"
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\n", s.User, s.Source, s.MFA, s.CreatedAt.Local().Format(time.DateTime), s.ExpiresAt.Local().Format(time.DateTime), state)
		}
		return tw.Flush()
	})
}

func authorizedKeyLine(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func shortHash(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}
