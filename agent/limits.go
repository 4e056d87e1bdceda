package agent

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// fileUserCALimits caches what the CA said each trusted user-CA key may
// sign (api.UserCALimit), so that a restart without the CA still enforces
// it. 0600 like everything in the data directory.
const fileUserCALimits = "user_ca_limits.json"

// MaxBackdate is how far the CA may set a user certificate's ValidAfter in
// the past for clock skew (DESIGN.md "Trust model": ≤ 1 minute; ca.Config
// refuses more). A certificate's validity window may exceed its tier's
// max_ttl by this much and no more.
const MaxBackdate = time.Minute

// DefaultMaxTTL is the max_ttl of DESIGN.md's default policy for tier:
// staging 2h, production 30m, break-glass 10m, and production's for any
// other tier name (strict by default, as DefaultTierSettings). The agent
// enforces it only for a user-CA key whose limit it never learned from
// the CA (a CA from before issue 8 that sends none).
func DefaultMaxTTL(tier string) time.Duration {
	switch tier {
	case api.TierStaging:
		return 2 * time.Hour
	case api.TierBreakGlass:
		return 10 * time.Minute
	}
	return 30 * time.Minute
}

// caLimit is the most a certificate signed by one user-CA key may claim.
type caLimit struct {
	tier    string
	maxTTL  time.Duration
	learned bool // from the CA (now or cached); false: DefaultMaxTTL
	// notAfter, when set, is when the key retires (trustrotate.go).
	notAfter time.Time
}

// limitsFile is the JSON of fileUserCALimits.
type limitsFile struct {
	Updated time.Time         `json:"updated"`
	Limits  []api.UserCALimit `json:"limits"`
}

// limitFor returns the limit for certificates signed by caKey: what the
// CA said for that key, else the default maximum of the host's tier.
func (id *hostIdentity) limitFor(caKey ssh.PublicKey) caLimit {
	if l, ok := id.limits[string(caKey.Marshal())]; ok {
		return l
	}
	return caLimit{tier: id.tier, maxTTL: DefaultMaxTTL(id.tier)}
}

// indexLimits keeps the limits of keys the host trusts, by marshalled key.
// Limits of other keys, and non-positive ones, are ignored.
func indexLimits(limits []api.UserCALimit, trusted map[string]bool) (map[string]caLimit, error) {
	out := map[string]caLimit{}
	for _, l := range limits {
		if l.MaxTTL <= 0 {
			continue
		}
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(l.UserCA))
		if err != nil {
			return nil, fmt.Errorf("agent: parse user CA key of tier %q limit: %w", l.Tier, err)
		}
		k := string(key.Marshal())
		if !trusted[k] {
			continue
		}
		out[k] = caLimit{tier: l.Tier, maxTTL: time.Duration(l.MaxTTL), learned: true, notAfter: l.NotAfter}
	}
	return out, nil
}

// loadLimits reads the cached limits; none cached is no error.
func loadLimits(dataDir string) ([]api.UserCALimit, error) {
	var f limitsFile
	_, err := readJSONFile(dataDir, fileUserCALimits, "user CA limits", &f)
	return f.Limits, err
}

func saveLimits(cfg *Config, limits []api.UserCALimit) error {
	data, err := json.MarshalIndent(limitsFile{Updated: cfg.Now().UTC(), Limits: limits}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(cfg.DataDir, fileUserCALimits), append(data, '\n'), cfg.Rand)
}

// checkLifetime refuses a certificate that claims more time than its
// tier allows: no expiry, no start (valid since 1970), or a validity
// window longer than max_ttl plus MaxBackdate. OpenSSH's sshd has no such
// check; it is what keeps a leaked tier key from minting certificates that
// outlive every revocation list and every policy change.
func checkLifetime(cert *ssh.Certificate, l caLimit) (reason, detail string) {
	if cert.ValidBefore == ssh.CertTimeInfinity || cert.ValidAfter == 0 {
		return reasonUnbounded, fmt.Sprintf("valid_after=%d valid_before=%d", cert.ValidAfter, cert.ValidBefore)
	}
	after, before := int64(cert.ValidAfter), int64(cert.ValidBefore)
	if after < 0 || before < 0 || before <= after {
		return "", "" // checkValidity refuses these
	}
	allowed := int64((l.maxTTL + MaxBackdate + time.Second - 1) / time.Second)
	if window := before - after; window > allowed {
		return reasonTooLong, fmt.Sprintf("window=%s max_ttl=%s tier=%s limit_from=%s",
			time.Duration(window)*time.Second, l.maxTTL, l.tier, limitSource(l))
	}
	return "", ""
}

func limitSource(l caLimit) string {
	if l.learned {
		return "ca"
	}
	return "default"
}

// describeLimits is a log value: "production=30m0s(ca),…".
func describeLimits(id *hostIdentity) string {
	var parts []string
	for k := range id.userCAs {
		pub, err := ssh.ParsePublicKey([]byte(k))
		if err != nil {
			continue
		}
		l := id.limitFor(pub)
		parts = append(parts, fmt.Sprintf("%s=%s(%s)", l.tier, l.maxTTL, limitSource(l)))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}
