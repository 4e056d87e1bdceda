package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/keys"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/server"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/cmd/internal/adminsock"
	"github.com/sshward/sshward/cmd/internal/cli"
)

// sshward-ca keys rotate|retire|list (issue 14): a tier's user-CA key, or
// the host-CA key (--host-ca), rotates while the CA serves (through the admin socket; the running CA
// holds the passphrase) or offline (with it from $SSHWARD_CA_PASSPHRASE).

const defaultOverlap = 24 * time.Hour

// dirKeys rotates the CA keys in the CA directory (ca.KeyRotator).
type dirKeys struct {
	l    layout
	pass []byte
}

// keyName is the file stem of a CA key in the keys directory.
func (l layout) keyName(id ca.KeyID) string {
	if id.Host {
		return hostCAName
	}
	return l.userCAName(id.Tier)
}

// keyComment ends the key's .pub line.
func keyComment(id ca.KeyID) string {
	if id.Host {
		return "sshward host CA"
	}
	return "sshward " + id.Tier + " user CA"
}

func (d *dirKeys) Rotate(ctx context.Context, id ca.KeyID, now, retireAt time.Time) (ssh.Signer, error) {
	ring, err := keys.Rotate(ctx, keys.RotateRequest{Dir: d.l.keys(), Name: d.l.keyName(id), Passphrase: d.pass,
		Comment: keyComment(id), Now: now, RetireAt: retireAt})
	if err != nil {
		return nil, err
	}
	return ring.Current.SSHSigner()
}

func (d *dirKeys) Retire(ctx context.Context, id ca.KeyID) error {
	_, err := keys.Retire(ctx, d.l.keys(), d.l.keyName(id))
	return err
}

// loadCA opens a CA key ring: the signer and its previous key.
func loadCA(ctx context.Context, l layout, id ca.KeyID, pass []byte) (ssh.Signer, ca.PreviousKey, error) {
	ring, err := keys.LoadRing(ctx, l.keys(), l.keyName(id), pass)
	if err != nil {
		return nil, ca.PreviousKey{}, err
	}
	s, err := ring.Current.SSHSigner()
	if err != nil {
		return nil, ca.PreviousKey{}, err
	}
	return s, ca.PreviousKey{Key: ring.Previous, RetireAt: ring.Rotation.RetireAt}, nil
}

// trustedPubLines are the trusted keys of id at now, from the files: the
// signing key, then the previous one during its overlap.
func trustedPubLines(l layout, id ca.KeyID, now time.Time) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(l.keys(), l.keyName(id)+".pub"))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", id, err)
	}
	out := []string{strings.TrimSpace(string(b))}
	prev, rot, err := keys.ReadPrevious(l.keys(), l.keyName(id))
	if err != nil {
		return nil, fmt.Errorf("read %s's previous key: %w", id, err)
	}
	if prev != nil && now.Before(rot.RetireAt) {
		out = append(out, keys.PublicLine(prev)+" "+keyComment(id)+" (previous, retires "+rot.RetireAt.UTC().Format(time.RFC3339)+")")
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
	hostCA := fs.Bool("host-ca", false, "rotate or retire the host CA key instead")
	overlap := fs.Duration("overlap", defaultOverlap, "how long the old key stays trusted (at least the tier's max_ttl; for the host CA, the host certificate lifetime)")
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
		return e.listKeys(ctx, l, pol.TierNames(), *asJSON)
	}
	if verb != "rotate" && verb != "retire" {
		return fmtUsage(fmt.Sprintf("unknown keys verb %q: rotate, retire or list", verb))
	}
	var id ca.KeyID
	var minOverlap time.Duration
	var minWhat string
	switch {
	case *hostCA && *tier != "":
		return fmtUsage("keys " + verb + " takes --tier T or --host-ca, not both")
	case *hostCA:
		id, minOverlap, minWhat = ca.HostKey, hostCertTTL(pol), "the host certificate lifetime"
	case *tier == "":
		return fmtUsage("keys " + verb + " needs --tier T (or --host-ca)")
	default:
		pt, ok := pol.Tier(*tier)
		if !ok {
			return fmt.Errorf("unknown tier %q (known: %s)", *tier, strings.Join(pol.TierNames(), ", "))
		}
		id, minOverlap, minWhat = ca.UserKey(pt.Name), pt.MaxTTL, "tier "+pt.Name+"'s max_ttl"
	}
	var res ca.KeyRotation
	if adminsock.Answers(l.socket()) {
		sa := newSocketAdmin(l.socket())
		if verb == "rotate" {
			err = sa.call(ctx, http.MethodPost, server.AdminKeysRotate, server.KeyRotateRequest{Tier: id.Tier, HostCA: id.Host, Overlap: api.Duration(*overlap)}, &res)
		} else {
			err = sa.call(ctx, http.MethodPost, server.AdminKeysRetire, server.KeyRetireRequest{Tier: id.Tier, HostCA: id.Host, Force: *force}, &res)
		}
		if err != nil {
			return err
		}
	} else if err := e.offlineKeyStep(ctx, l, verb, id, minOverlap, minWhat, *overlap, *force, *passFile, &res); err != nil {
		return err
	}
	if *asJSON {
		return cli.JSON(e.stdout, res)
	}
	switch {
	case verb == "rotate" && id.Host:
		fmt.Fprintf(e.stdout, "rotated the host CA: host certificates are signed by %s from now on (agents renew onto it within minutes); %s stays trusted until %s: clients run `sshward ssh-config` to trust both (sshward-ca keys retire --host-ca then, or the CA retires it by itself)\n",
			res.Current, res.Previous, res.RetireAt.Format(time.RFC3339))
	case verb == "rotate":
		fmt.Fprintf(e.stdout, "rotated the %s user CA: new certificates are signed by %s; %s stays trusted until %s (sshward-ca keys retire --tier %s then, or the CA retires it by itself)\n",
			res.Tier, res.Current, res.Previous, res.RetireAt.Format(time.RFC3339), res.Tier)
	case id.Host:
		fmt.Fprintf(e.stdout, "retired %s from the host CA: clients that ran `sshward ssh-config` since now trust only %s\n", res.Previous, res.Current)
	default:
		fmt.Fprintf(e.stdout, "retired %s from the %s user CA: hosts now trust only %s\n", res.Previous, res.Tier, res.Current)
	}
	return nil
}

// offlineKeyStep rotates or retires with the CA stopped: the files here,
// the audit record in the store.
func (e *env) offlineKeyStep(ctx context.Context, l layout, verb string, id ca.KeyID, minOverlap time.Duration, minWhat string, overlap time.Duration, force bool, passFile string, res *ca.KeyRotation) error {
	if cfg, err := loadConfig(l.config()); err != nil {
		return err
	} else if cfg.Store.Etcd != nil {
		return fmt.Errorf("the CA at %s is not running: on etcd the CA keys are in the store the replicas share, so keys %s goes through a running replica (any one: sshward-ca keys %s --dir DIR-of-a-replica)", l.dir, verb, verb)
	}
	now := time.Now()
	res.Tier, res.HostCA = id.Tier, id.Host
	var reason string
	switch verb {
	case "rotate":
		if overlap < minOverlap {
			return fmt.Errorf("the overlap %s is shorter than %s %s: certificates of the old key would be refused before they expire; pass --overlap %s or more", overlap, minWhat, minOverlap, minOverlap)
		}
		pass, err := e.passphrase(passFile)
		if err != nil {
			return err
		}
		defer clear(pass)
		ring, err := keys.Rotate(ctx, keys.RotateRequest{Dir: l.keys(), Name: l.keyName(id), Passphrase: pass,
			Comment: keyComment(id), Now: now, RetireAt: now.Add(overlap)})
		if errors.Is(err, keys.ErrRotationPending) {
			return fmt.Errorf("%s's previous key has not retired: retire it first (sshward-ca keys retire %s)", id, id.Flag())
		}
		if err != nil {
			return err
		}
		res.Previous, res.Current, res.RetireAt = ring.Rotation.Previous, ring.Rotation.Current, ring.Rotation.RetireAt
	case "retire":
		prev, rot, err := keys.ReadPrevious(l.keys(), l.keyName(id))
		if err != nil {
			return err
		}
		if prev == nil {
			return fmt.Errorf("%s has no previous key to retire", id)
		}
		reason = "end of overlap"
		if now.Before(rot.RetireAt) {
			if !force {
				return fmt.Errorf("certificates of %s's previous key may be valid until %s: wait, or pass --force to refuse them now", id, rot.RetireAt.UTC().Format(time.RFC3339))
			}
			reason = "forced"
		}
		if _, err := keys.Retire(ctx, l.keys(), l.keyName(id)); err != nil {
			return err
		}
		res.Previous, res.Current, res.RetireAt = rot.Previous, rot.Current, rot.RetireAt
	}
	lines, err := trustedPubLines(l, id, now)
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
	Tier     string    `json:"tier,omitempty"`
	HostCA   bool      `json:"host_ca,omitempty"`
	Current  string    `json:"current_fingerprint"`
	Previous string    `json:"previous_fingerprint,omitempty"`
	RetireAt time.Time `json:"retire_at,omitzero"`
	// URI is the signing key's pkcs11 URI (without the pin-source) when
	// it is in a token; empty for a key file.
	URI string `json:"uri,omitempty"`
}

// hostCertTTL is the lifetime of the host certificates the policy gives.
func hostCertTTL(pol *policy.Policy) time.Duration {
	if pol.HostCertTTL > 0 {
		return pol.HostCertTTL
	}
	return ca.DefaultHostCertTTL
}

func (e *env) listKeys(ctx context.Context, l layout, tiers []string, asJSON bool) error {
	ks, err := openKeySource(ctx, l)
	if err != nil {
		return err
	}
	defer ks.Close()
	var out []keyInfo
	ids := []ca.KeyID{}
	for _, t := range tiers {
		ids = append(ids, ca.UserKey(t))
	}
	for _, id := range append(ids, ca.HostKey) {
		if ki, ok, err := ks.info(ctx, id); err != nil {
			return err
		} else if ok {
			out = append(out, ki)
			continue
		}
		path := filepath.Join(l.keys(), l.keyName(id)+".pub")
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read %s: %w", id, err)
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		ki := keyInfo{Tier: id.Tier, HostCA: id.Host, Current: ssh.FingerprintSHA256(pub)}
		if ki.URI, err = keys.TokenURI(l.keys(), l.keyName(id)); err != nil {
			return err
		}
		if prev, rot, err := keys.ReadPrevious(l.keys(), l.keyName(id)); err != nil {
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
	fmt.Fprintln(tw, "TIER\tSIGNING KEY\tPREVIOUS KEY\tRETIRES\tIN")
	for _, k := range out {
		prev, at := "-", "-"
		if k.Previous != "" {
			prev, at = k.Previous, k.RetireAt.UTC().Format(time.RFC3339)
		}
		name := k.Tier
		if k.HostCA {
			name = "(host CA)"
		}
		in := "file"
		if k.URI != "" {
			in = k.URI
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, k.Current, prev, at, in)
	}
	return tw.Flush()
}
