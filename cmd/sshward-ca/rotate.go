package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/keys"
	"github.com/sshward/sshward/ca/server"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/cmd/internal/cli"
)

// sshward-ca keys rotate|retire|list (issue 14): a tier's user-CA key
// rotates while the CA serves (through the admin socket; the running CA
// holds the passphrase) or offline (with it from $SSHWARD_CA_PASSPHRASE).

const defaultOverlap = 24 * time.Hour

// dirKeys rotates the user-CA keys in the CA directory (ca.KeyRotator).
type dirKeys struct {
	l    layout
	pass []byte
}

func (d *dirKeys) Rotate(ctx context.Context, tier string, now, retireAt time.Time) (ssh.Signer, error) {
	ring, err := keys.Rotate(ctx, keys.RotateRequest{Dir: d.l.keys(), Name: d.l.userCAName(tier), Passphrase: d.pass,
		Comment: "sshward " + tier + " user CA", Now: now, RetireAt: retireAt})
	if err != nil {
		return nil, err
	}
	return ring.Current.SSHSigner()
}

func (d *dirKeys) Retire(_ context.Context, tier string) error {
	_, err := keys.Retire(d.l.keys(), d.l.userCAName(tier))
	return err
}

// loadUserCA opens tier's key ring: the signer and its previous key.
func loadUserCA(ctx context.Context, l layout, tier string, pass []byte) (ssh.Signer, ca.PreviousKey, error) {
	ring, err := keys.LoadRing(ctx, l.keys(), l.userCAName(tier), pass)
	if err != nil {
		return nil, ca.PreviousKey{}, err
	}
	s, err := ring.Current.SSHSigner()
	if err != nil {
		return nil, ca.PreviousKey{}, err
	}
	return s, ca.PreviousKey{Key: ring.Previous, RetireAt: ring.Rotation.RetireAt}, nil
}

// trustedPubLines are tier's trusted user-CA keys at now, from the files:
// the signing key, then the previous one during its overlap.
func trustedPubLines(l layout, tier string, now time.Time) ([]string, error) {
	b, err := os.ReadFile(l.userCAPub(tier))
	if err != nil {
		return nil, fmt.Errorf("read %s user CA: %w", tier, err)
	}
	out := []string{strings.TrimSpace(string(b))}
	prev, rot, err := keys.ReadPrevious(l.keys(), l.userCAName(tier))
	if err != nil {
		return nil, fmt.Errorf("read %s previous user CA: %w", tier, err)
	}
	if prev != nil && now.Before(rot.RetireAt) {
		out = append(out, keys.PublicLine(prev)+" sshward "+tier+" user CA (previous, retires "+rot.RetireAt.UTC().Format(time.RFC3339)+")")
	}
	return out, nil
}

func (e *env) cmdKeys(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmtUsage("keys needs a verb: rotate, retire or list")
	}
	verb, args := args[0], args[1:]
	fs := cli.NewFlagSet("sshward-ca keys " + verb + " --dir DIR --tier T")
	dir := e.dirFlag(fs)
	tier := fs.String("tier", "", "the tier whose user CA key rotates")
	overlap := fs.Duration("overlap", defaultOverlap, "how long the old key stays trusted (at least the tier's max_ttl)")
	force := fs.Bool("force", false, "retire before the overlap ends: the old key's certificates are refused at once")
	passFile := fs.String("passphrase-file", "", "file holding the CA passphrase, when the CA is not running (else $SSHWARD_CA_PASSPHRASE)")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	l := layout{*dir}
	if err := l.check(); err != nil {
		return err
	}
	pol, err := loadPolicy(l.policy())
	if err != nil {
		return err
	}
	if verb == "list" {
		return e.listKeys(l, pol.TierNames(), *asJSON)
	}
	if verb != "rotate" && verb != "retire" {
		return fmtUsage(fmt.Sprintf("unknown keys verb %q: rotate, retire or list", verb))
	}
	if *tier == "" {
		return fmtUsage("keys " + verb + " needs --tier T")
	}
	pt, ok := pol.Tier(*tier)
	if !ok {
		return fmt.Errorf("unknown tier %q (known: %s)", *tier, strings.Join(pol.TierNames(), ", "))
	}
	var res ca.KeyRotation
	if c, err := net.DialTimeout("unix", l.socket(), time.Second); err == nil {
		c.Close()
		sa := newSocketAdmin(l.socket())
		if verb == "rotate" {
			err = sa.call(ctx, http.MethodPost, server.AdminKeysRotate, server.KeyRotateRequest{Tier: *tier, Overlap: api.Duration(*overlap)}, &res)
		} else {
			err = sa.call(ctx, http.MethodPost, server.AdminKeysRetire, server.KeyRetireRequest{Tier: *tier, Force: *force}, &res)
		}
		if err != nil {
			return err
		}
	} else if err := e.offlineKeyStep(ctx, l, verb, pt.Name, pt.MaxTTL, *overlap, *force, *passFile, &res); err != nil {
		return err
	}
	if *asJSON {
		return cli.JSON(e.stdout, res)
	}
	if verb == "rotate" {
		fmt.Fprintf(e.stdout, "rotated the %s user CA: new certificates are signed by %s; %s stays trusted until %s (sshward-ca keys retire --tier %s then, or the CA retires it by itself)\n",
			res.Tier, res.Current, res.Previous, res.RetireAt.Format(time.RFC3339), res.Tier)
	} else {
		fmt.Fprintf(e.stdout, "retired %s from the %s user CA: hosts now trust only %s\n", res.Previous, res.Tier, res.Current)
	}
	return nil
}

// offlineKeyStep rotates or retires with the CA stopped: the files here,
// the audit record in the store.
func (e *env) offlineKeyStep(ctx context.Context, l layout, verb, tier string, maxTTL, overlap time.Duration, force bool, passFile string, res *ca.KeyRotation) error {
	now := time.Now()
	res.Tier = tier
	var reason string
	switch verb {
	case "rotate":
		if overlap < maxTTL {
			return fmt.Errorf("the overlap %s is shorter than tier %s's max_ttl %s: certificates of the old key would be refused before they expire; pass --overlap %s or more", overlap, tier, maxTTL, maxTTL)
		}
		pass, err := e.passphrase(passFile)
		if err != nil {
			return err
		}
		defer clear(pass)
		ring, err := keys.Rotate(ctx, keys.RotateRequest{Dir: l.keys(), Name: l.userCAName(tier), Passphrase: pass,
			Comment: "sshward " + tier + " user CA", Now: now, RetireAt: now.Add(overlap)})
		if errors.Is(err, keys.ErrRotationPending) {
			return fmt.Errorf("tier %s's previous key has not retired: retire it first (sshward-ca keys retire --tier %s)", tier, tier)
		}
		if err != nil {
			return err
		}
		res.Previous, res.Current, res.RetireAt = ring.Rotation.Previous, ring.Rotation.Current, ring.Rotation.RetireAt
	case "retire":
		prev, rot, err := keys.ReadPrevious(l.keys(), l.userCAName(tier))
		if err != nil {
			return err
		}
		if prev == nil {
			return fmt.Errorf("tier %s has no previous key to retire", tier)
		}
		reason = "end of overlap"
		if now.Before(rot.RetireAt) {
			if !force {
				return fmt.Errorf("certificates of tier %s's previous key may be valid until %s: wait, or pass --force to refuse them now", tier, rot.RetireAt.UTC().Format(time.RFC3339))
			}
			reason = "forced"
		}
		if _, err := keys.Retire(l.keys(), l.userCAName(tier)); err != nil {
			return err
		}
		res.Previous, res.Current, res.RetireAt = rot.Previous, rot.Current, rot.RetireAt
	}
	lines, err := trustedPubLines(l, tier, now)
	if err != nil {
		return err
	}
	res.Keys = lines
	db, err := openStore(ctx, l, nil, 2*time.Second)
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("the CA store %s is locked by a running sshward-ca whose admin socket %s does not answer: restart it", l.db(), l.socket())
	}
	if err != nil {
		return err
	}
	defer db.Close()
	pol, err := loadPolicy(l.policy())
	if err != nil {
		return err
	}
	adm, err := ca.NewAdmin(ca.AdminConfig{Store: db, Policy: pol})
	if err != nil {
		return err
	}
	return adm.RecordKeyStep(ctx, "key."+verb, "admin-offline", reason, res)
}

// keyInfo is one line of keys list --json.
type keyInfo struct {
	Tier     string    `json:"tier"`
	Current  string    `json:"current_fingerprint"`
	Previous string    `json:"previous_fingerprint,omitempty"`
	RetireAt time.Time `json:"retire_at,omitzero"`
}

func (e *env) listKeys(l layout, tiers []string, asJSON bool) error {
	var out []keyInfo
	for _, t := range tiers {
		b, err := os.ReadFile(l.userCAPub(t))
		if err != nil {
			return fmt.Errorf("read %s user CA: %w", t, err)
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			return fmt.Errorf("%s: %w", l.userCAPub(t), err)
		}
		ki := keyInfo{Tier: t, Current: ssh.FingerprintSHA256(pub)}
		if prev, rot, err := keys.ReadPrevious(l.keys(), l.userCAName(t)); err != nil {
			return err
		} else if prev != nil {
			ki.Previous, ki.RetireAt = rot.Previous, rot.RetireAt
		}
		out = append(out, ki)
	}
	if asJSON {
		return cli.JSON(e.stdout, out)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIER\tSIGNING KEY\tPREVIOUS KEY\tRETIRES")
	for _, k := range out {
		prev, at := "-", "-"
		if k.Previous != "" {
			prev, at = k.Previous, k.RetireAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Tier, k.Current, prev, at)
	}
	return tw.Flush()
}
