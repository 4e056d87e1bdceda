package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Key rotation on disk (issue 14). A CA key NAME lives in DIR/NAME.key
// (encrypted, 0600) and DIR/NAME.pub; NAME.key is always the key that
// signs. Rotation makes a new key and keeps the old one beside it until it
// retires:
//
//	DIR/NAME.key, NAME.pub             the signing key (the new one)
//	DIR/NAME.prev.key, NAME.prev.pub   the previous key, still trusted
//	DIR/NAME.prev.json                 when it retires, both fingerprints
//
// A key in a hardware module has NAME.uri (its pkcs11 URI, token.go) where
// a key file has NAME.key; it moves the same way, and its rotation makes
// the new key in the same token as a new object.
//
// Only one previous key at a time: a second rotation waits for the first
// to retire. Retire removes the three .prev files. Every step leaves a
// state that LoadRing reads back (a rotation cut short by a crash is
// finished on the next load), and NAME.key is never overwritten in place.

// Rotation is NAME.prev.json: the previous key and when it stops being
// trusted.
type Rotation struct {
	// Previous and Current are SHA256 fingerprints (ssh-keygen -l).
	Previous string    `json:"previous"`
	Current  string    `json:"current"`
	RotateAt time.Time `json:"rotated_at"`
	RetireAt time.Time `json:"retire_at"`
}

// Ring is a CA key with its previous key during an overlap.
type Ring struct {
	// Current signs.
	Current *Key
	// Previous is the public half of the key it replaced; nil when none.
	Previous ssh.PublicKey
	// Rotation says when Previous retires; zero when Previous is nil.
	Rotation Rotation
}

// PreviousTrusted reports whether Previous is still inside its overlap at now.
func (r *Ring) PreviousTrusted(now time.Time) bool {
	return r.Previous != nil && now.Before(r.Rotation.RetireAt)
}

func prevKeyPath(dir, name string) string  { return filepath.Join(dir, name+".prev.key") }
func prevPubPath(dir, name string) string  { return filepath.Join(dir, name+".prev.pub") }
func prevJSONPath(dir, name string) string { return filepath.Join(dir, name+".prev.json") }
func nextName(name string) string          { return name + ".next" }

// LoadRing opens DIR/NAME.key and reads the previous key's public half and
// rotation record, finishing a rotation a crash cut short.
func LoadRing(ctx context.Context, dir, name string, passphrase []byte) (*Ring, error) {
	if err := repairRotation(dir, name); err != nil {
		return nil, fmt.Errorf("keys: load %s: %w", name, err)
	}
	cur, err := openCurrent(ctx, dir, name, passphrase)
	if err != nil {
		return nil, err
	}
	r := &Ring{Current: cur}
	prev, rot, err := readPrevious(dir, name)
	if err != nil {
		return nil, fmt.Errorf("keys: load %s: %w", name, err)
	}
	r.Previous, r.Rotation = prev, rot
	return r, nil
}

// openCurrent opens NAME's signing key: the token key DIR/NAME.uri names,
// else the key file DIR/NAME.key.
func openCurrent(ctx context.Context, dir, name string, passphrase []byte) (*Key, error) {
	u, err := readTokenURI(dir, name)
	if err != nil {
		return nil, fmt.Errorf("keys: load %s: %w", name, err)
	}
	if u != "" {
		return Open(ctx, u, nil)
	}
	return Open(ctx, filepath.Join(dir, name+".key"), passphrase)
}

// ReadPrevious returns the previous key of NAME and its rotation record,
// or nil when there is none. It needs no passphrase (public halves only).
func ReadPrevious(dir, name string) (ssh.PublicKey, Rotation, error) {
	return readPrevious(dir, name)
}

func readPrevious(dir, name string) (ssh.PublicKey, Rotation, error) {
	var rot Rotation
	data, err := os.ReadFile(prevJSONPath(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, rot, nil
	}
	if err != nil {
		return nil, rot, err
	}
	if err := json.Unmarshal(data, &rot); err != nil {
		return nil, rot, fmt.Errorf("%s: %w", prevJSONPath(dir, name), err)
	}
	pubLine, err := os.ReadFile(prevPubPath(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, Rotation{}, nil // retired, the record not yet removed
	}
	if err != nil {
		return nil, rot, err
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(pubLine)
	if err != nil {
		return nil, rot, fmt.Errorf("%s: %w", prevPubPath(dir, name), err)
	}
	if fp := ssh.FingerprintSHA256(pub); fp != rot.Previous {
		return nil, rot, fmt.Errorf("%s holds %s, the rotation record names %s", prevPubPath(dir, name), fp, rot.Previous)
	}
	return pub, rot, nil
}

// repairRotation finishes a rotation a crash interrupted after the new key
// was made: NAME.next.* becomes NAME.*, the old key moving to NAME.prev.*
// first when it is still in place and the record says it is the previous
// one. A NAME.next with no record is a rotation that never started: removed.
func repairRotation(dir, name string) error {
	nk := filepath.Join(dir, nextName(name)+".key")
	next, err := RingExists(dir, nextName(name))
	if err != nil || !next {
		return err
	}
	data, err := os.ReadFile(prevJSONPath(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return removeKey(dir, nextName(name))
	}
	if err != nil {
		return err
	}
	var rot Rotation
	if err := json.Unmarshal(data, &rot); err != nil {
		return err
	}
	cur := filepath.Join(dir, name+".key")
	if exists, err := RingExists(dir, name); err != nil {
		return err
	} else if exists {
		if prev, err := RingExists(dir, name+".prev"); err != nil {
			return err
		} else if prev {
			return fmt.Errorf("%s, %s and %s (or their .uri) all exist: move one away by hand", cur, nk, prevKeyPath(dir, name))
		}
		if err := moveKey(dir, name, name+".prev"); err != nil {
			return err
		}
	}
	return moveKey(dir, nextName(name), name)
}

// moveKey renames FROM.pub and FROM.key (or FROM.uri) to TO.* (.pub first
// is not needed: NAME.key or NAME.uri decides which key is current).
func moveKey(dir, from, to string) error {
	if err := os.Rename(filepath.Join(dir, from+".pub"), filepath.Join(dir, to+".pub")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	moved := false
	for _, ext := range []string{".uri", ".key"} {
		err := os.Rename(filepath.Join(dir, from+ext), filepath.Join(dir, to+ext))
		if err == nil {
			moved = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if !moved {
		return fmt.Errorf("%s: %w", filepath.Join(dir, from+".key"), fs.ErrNotExist)
	}
	return syncDir(dir)
}

// removeKey removes NAME.key, NAME.uri and NAME.pub (the private half or
// the reference to it first).
func removeKey(dir, name string) error {
	for _, ext := range []string{".key", ".uri", ".pub"} {
		if err := os.Remove(filepath.Join(dir, name+ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// RotateRequest asks for a new key NAME in Dir, the current one staying
// trusted until RetireAt.
type RotateRequest struct {
	Dir, Name  string
	Passphrase []byte
	Comment    string
	Now        time.Time
	RetireAt   time.Time
}

// Rotate makes a new key for NAME and turns the current one into the
// previous key, trusted until RetireAt. It refuses (ErrRotationPending)
// while an earlier previous key has not retired. The passphrase must open
// the current key: a rotation never leaves keys under two passphrases.
func Rotate(ctx context.Context, r RotateRequest) (*Ring, error) {
	if !r.RetireAt.After(r.Now) {
		return nil, fmt.Errorf("keys: rotate %s: the overlap must end after now", r.Name)
	}
	old, err := LoadRing(ctx, r.Dir, r.Name, r.Passphrase)
	if err != nil {
		return nil, fmt.Errorf("keys: rotate %s: %w", r.Name, err)
	}
	if old.Previous != nil {
		return nil, fmt.Errorf("keys: rotate %s: %w (%s retires at %s)", r.Name, ErrRotationPending,
			old.Rotation.Previous, old.Rotation.RetireAt.UTC().Format(time.RFC3339))
	}
	oldPub, err := ssh.NewPublicKey(old.Current.Public())
	if err != nil {
		return nil, fmt.Errorf("keys: rotate %s: %w", r.Name, err)
	}
	old.Current.Close()
	next, err := createNext(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("keys: rotate %s: %w", r.Name, err)
	}
	newPub, err := ssh.NewPublicKey(next.Public())
	next.Close()
	if err != nil {
		return nil, fmt.Errorf("keys: rotate %s: %w", r.Name, err)
	}
	rot := Rotation{Previous: ssh.FingerprintSHA256(oldPub), Current: ssh.FingerprintSHA256(newPub),
		RotateAt: r.Now.UTC(), RetireAt: r.RetireAt.UTC()}
	data, err := json.MarshalIndent(rot, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("keys: rotate %s: %w", r.Name, err)
	}
	// The record first: with it on disk, repairRotation finishes the
	// renames below if the process dies between them.
	if err := writeNew(prevJSONPath(r.Dir, r.Name), append(data, '\n'), 0o644); err != nil {
		_ = removeKey(r.Dir, nextName(r.Name))
		return nil, fmt.Errorf("keys: rotate %s: %w", r.Name, err)
	}
	if err := repairRotation(r.Dir, r.Name); err != nil {
		return nil, fmt.Errorf("keys: rotate %s: %w", r.Name, err)
	}
	cur, err := openCurrent(ctx, r.Dir, r.Name, r.Passphrase)
	if err != nil {
		return nil, fmt.Errorf("keys: rotate %s: %w", r.Name, err)
	}
	return &Ring{Current: cur, Previous: oldPub, Rotation: rot}, nil
}

// createNext makes NAME.next: a new key file, or, when NAME is a key in a
// token, a new key in the same token (a new id and object label).
func createNext(ctx context.Context, r RotateRequest) (*Key, error) {
	curURI, err := readTokenURI(r.Dir, r.Name)
	if err != nil {
		return nil, err
	}
	if curURI == "" {
		return Create(ctx, CreateRequest{Dir: r.Dir, Name: nextName(r.Name), Passphrase: r.Passphrase, Comment: r.Comment})
	}
	newURI, err := TokenKeyURI(curURI, r.Name, r.Now)
	if err != nil {
		return nil, err
	}
	k, err := CreateInToken(ctx, newURI)
	if err != nil {
		return nil, err
	}
	if err := writeTokenRef(r.Dir, nextName(r.Name), newURI, k, r.Comment); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// Retire removes the previous key of NAME (private half first: a key in a
// token is destroyed there) and its record. It returns the record of what
// was retired; ErrNoRotation when there is no previous key.
func Retire(ctx context.Context, dir, name string) (Rotation, error) {
	prev, rot, err := readPrevious(dir, name)
	if err != nil {
		return rot, fmt.Errorf("keys: retire %s: %w", name, err)
	}
	if prev == nil {
		return rot, fmt.Errorf("keys: retire %s: %w", name, ErrNoRotation)
	}
	if err := deleteTokenKey(ctx, dir, name+".prev"); err != nil {
		return rot, fmt.Errorf("keys: retire %s: %w", name, err)
	}
	for _, p := range []string{prevKeyPath(dir, name), uriPath(dir, name+".prev"), prevPubPath(dir, name), prevJSONPath(dir, name)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return rot, fmt.Errorf("keys: retire %s: %w", name, err)
		}
	}
	if err := syncDir(dir); err != nil {
		return rot, fmt.Errorf("keys: retire %s: %w", name, err)
	}
	return rot, nil
}

// PublicLine is the authorized_keys line of pub without a comment.
func PublicLine(pub ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}
