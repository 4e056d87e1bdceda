package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Certificate kinds (CertRecord.Kind), as in PROTOCOL.certkeys.
const (
	CertKindUser = "user"
	CertKindHost = "host"
)

// CertRecord describes one issued certificate. It is written in the same
// transaction as the issuance's audit event, before the certificate is
// handed out.
type CertRecord struct {
	Serial      uint64    `json:"serial"`
	KeyID       string    `json:"key_id"`
	Kind        string    `json:"kind"` // CertKindUser or CertKindHost
	Tier        string    `json:"tier,omitzero"`
	Identity    string    `json:"identity,omitzero"` // user name or host name the cert was issued to
	Principals  []string  `json:"principals,omitempty"`
	ValidAfter  time.Time `json:"valid_after"`
	ValidBefore time.Time `json:"valid_before"`
	IssuedAt    time.Time `json:"issued_at"`              // set by PutCert when zero
	PublicKeyFP string    `json:"public_key_fp,omitzero"` // SHA256:… of the certified key
	RequestID   string    `json:"request_id,omitzero"`    // access request, if any
	ClientAddr  string    `json:"client_addr,omitzero"`   // who asked, as seen by the CA
}

// CertFilter selects certificates for ListCerts. Zero fields match all.
type CertFilter struct {
	Kind     string
	Tier     string
	Identity string
	// ValidAt keeps certificates valid at that instant
	// (ValidAfter <= ValidAt < ValidBefore).
	ValidAt time.Time
	// IssuedSince keeps certificates with IssuedAt >= IssuedSince.
	IssuedSince time.Time
	// AfterSerial keeps serials > AfterSerial: pass the last serial of one
	// page to get the next.
	AfterSerial uint64
	// Limit caps the result; <= 0 means no cap.
	Limit int
}

func (f *CertFilter) match(c *CertRecord) bool {
	switch {
	case f.Kind != "" && c.Kind != f.Kind,
		f.Tier != "" && c.Tier != f.Tier,
		f.Identity != "" && c.Identity != f.Identity,
		!f.ValidAt.IsZero() && (f.ValidAt.Before(c.ValidAfter) || !f.ValidAt.Before(c.ValidBefore)),
		!f.IssuedSince.IsZero() && c.IssuedAt.Before(f.IssuedSince):
		return false
	}
	return true
}

func serialKey(serial uint64) []byte { return binary.BigEndian.AppendUint64(nil, serial) }

// keyIDPrefix is the index prefix for keyID: uvarint(len) ‖ keyID. Uvarints
// are prefix-free, so a prefix scan never runs into a longer key id that
// starts with the same bytes. The serial follows as 8 bytes big-endian.
func keyIDPrefix(keyID string) []byte {
	b := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(keyID)+8), uint64(len(keyID)))
	return append(b, keyID...)
}

func keyIDIndexKey(keyID string, serial uint64) []byte {
	return binary.BigEndian.AppendUint64(keyIDPrefix(keyID), serial)
}

// parseKeyIDIndexKey splits an index key; ok is false for malformed keys.
func parseKeyIDIndexKey(k []byte) (keyID string, serial uint64, ok bool) {
	n, w := binary.Uvarint(k)
	// Uvarint accepts overlong forms (0x80 0x00 is 0); only the canonical
	// one is ours.
	if w <= 0 || w != len(binary.AppendUvarint(nil, n)) || n > uint64(len(k)) || uint64(len(k)-w) != n+8 {
		return "", 0, false
	}
	return string(k[w : w+int(n)]), binary.BigEndian.Uint64(k[w+int(n):]), true
}

// PutCert records an issued certificate and indexes it by key id. Serial 0
// is refused (revocations use 0 to mean "by key id"); a serial that exists
// gives an error wrapping ErrDuplicateSerial. IssuedAt is set to now when
// zero.
func (tx *Tx) PutCert(c *CertRecord) error {
	const op = "put cert"
	if c.Serial == 0 {
		return fmt.Errorf("store: %s: serial is 0: %w", op, ErrInvalid)
	}
	if err := checkName(op, "key id", c.KeyID); err != nil {
		return err
	}
	if c.Kind != CertKindUser && c.Kind != CertKindHost {
		return fmt.Errorf("store: %s %d: kind %q is not %q or %q: %w", op, c.Serial, c.Kind, CertKindUser, CertKindHost, ErrInvalid)
	}
	b, err := tx.writeBucket(op, bucketCerts)
	if err != nil {
		return err
	}
	idx, err := tx.writeBucket(op, bucketCertKeyID)
	if err != nil {
		return err
	}
	k := serialKey(c.Serial)
	if b.Exists(k) {
		return fmt.Errorf("store: %s %d: %w", op, c.Serial, ErrDuplicateSerial)
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = tx.now()
	}
	// CAs hand out increasing serials (ca.Authority.serial): fill pages
	// completely, as the audit bucket does, instead of splitting them
	// half-empty (bbolt's default suits random inserts). Fewer pages per
	// commit and a smaller file.
	b.AppendOnly()
	// On etcd the record and its index entry leave CertKeep after the
	// certificate expires, and never sooner than MinCertKeep after now;
	// bbolt keeps them (see EtcdOptions.CertKeep).
	until := c.ValidBefore.Add(tx.certKeep)
	if floor := tx.now().Add(certKeepFloor(tx.certKeep)); until.Before(floor) {
		until = floor
	}
	if err := putJSONExpiring(b, k, c, until); err != nil {
		return fmt.Errorf("store: %s %d: %w", op, c.Serial, err)
	}
	if err := idx.PutExpiring(keyIDIndexKey(c.KeyID, c.Serial), nil, until); err != nil {
		return fmt.Errorf("store: %s %d: index: %w", op, c.Serial, err)
	}
	// The serial high-water mark outlives the records: MaxSerial never
	// goes back when they leave, so no serial is handed out twice.
	in, err := tx.writeBucket(op, bucketInternal)
	if err != nil {
		return err
	}
	if hw := in.Get(keySerialMax); len(hw) != 8 || binary.BigEndian.Uint64(hw) < c.Serial {
		if err := in.Put(keySerialMax, k); err != nil {
			return fmt.Errorf("store: %s %d: serial high-water mark: %w", op, c.Serial, err)
		}
	}
	return nil
}

// MinCertKeep bounds the least time a certificate record stays in the
// store after it is written, whatever its validity: the smaller of it and
// EtcdOptions.CertKeep (DB.CertKeepFloor). ca.Authority.serial re-reads
// MaxSerial more often than that.
const MinCertKeep = 10 * time.Minute

func certKeepFloor(keep time.Duration) time.Duration {
	if keep > 0 {
		return min(keep, MinCertKeep)
	}
	return MinCertKeep
}

// CertKeepFloor is the least time a certificate record stays in the store
// after PutCert (bbolt keeps them all).
func (db *DB) CertKeepFloor() time.Duration { return certKeepFloor(db.certKeep) }

// GetCert returns the certificate with this serial, or an error wrapping
// ErrNotFound.
func (tx *Tx) GetCert(serial uint64) (*CertRecord, error) {
	c := new(CertRecord)
	found, err := getJSON(tx.bucket(bucketCerts), serialKey(serial), c)
	if err != nil {
		return nil, fmt.Errorf("store: get cert %d: %w", serial, err)
	}
	if !found {
		return nil, fmt.Errorf("store: get cert %d: %w", serial, ErrNotFound)
	}
	return c, nil
}

// MaxSerial returns the highest serial ever recorded (0 when none), also
// after its record left the store: the high-water mark PutCert keeps, or
// the last record of a store written before the mark existed. A CA that
// hands out increasing serials seeds its counter from it; increasing
// serials also make PutCert append instead of insert at random, which
// keeps commits small.
func (tx *Tx) MaxSerial() (uint64, error) {
	var hw uint64
	if in := tx.bucket(bucketInternal); in != nil {
		if v := in.Get(keySerialMax); v != nil {
			if len(v) != 8 {
				return 0, fmt.Errorf("store: max serial: malformed high-water mark: %w", ErrInvalid)
			}
			hw = binary.BigEndian.Uint64(v)
		}
	}
	b := tx.bucket(bucketCerts)
	if b == nil {
		return hw, nil
	}
	k, _ := b.Cursor().Last()
	if k == nil {
		return hw, nil
	}
	if len(k) != 8 {
		return 0, fmt.Errorf("store: max serial: malformed key: %w", ErrInvalid)
	}
	return max(hw, binary.BigEndian.Uint64(k)), nil
}

// CertsByKeyID returns every certificate issued with this key id, by
// ascending serial (none is not an error).
func (tx *Tx) CertsByKeyID(keyID string) ([]CertRecord, error) {
	idx := tx.bucket(bucketCertKeyID)
	if idx == nil {
		return nil, nil
	}
	var out []CertRecord
	prefix := keyIDPrefix(keyID)
	c := idx.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		_, serial, ok := parseKeyIDIndexKey(k)
		if !ok {
			return nil, fmt.Errorf("store: certs by key id %q: malformed index key: %w", keyID, ErrInvalid)
		}
		rec, err := tx.GetCert(serial)
		if errors.Is(err, ErrNotFound) {
			// On etcd the record and its index entry leave on leases
			// that may end a lease step apart.
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("store: certs by key id %q: %w", keyID, err)
		}
		out = append(out, *rec)
	}
	return out, nil
}

// ListCerts returns the certificates that match f, by ascending serial. It
// scans the certificate bucket from f.AfterSerial on.
func (tx *Tx) ListCerts(f CertFilter) ([]CertRecord, error) {
	b := tx.bucket(bucketCerts)
	if b == nil {
		return nil, nil
	}
	var out []CertRecord
	c := b.Cursor()
	k, raw := c.Seek(serialKey(f.AfterSerial))
	if k != nil && bytes.Equal(k, serialKey(f.AfterSerial)) {
		k, raw = c.Next()
	}
	for ; k != nil; k, raw = c.Next() {
		rec := new(CertRecord)
		if err := json.Unmarshal(raw, rec); err != nil {
			return nil, fmt.Errorf("store: list certs: serial %x: %w", k, err)
		}
		if !f.match(rec) {
			continue
		}
		out = append(out, *rec)
		if f.Limit > 0 && len(out) >= f.Limit {
			break
		}
	}
	return out, nil
}
