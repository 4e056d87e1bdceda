package playback

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sshward/sshward/playback/objstore"
	"github.com/sshward/sshward/recorder/atrest"
	"gopkg.in/yaml.v3"
)

// ConfigFile is the name of the settings file in the server's directory.
const ConfigFile = "config.yaml"

// DefaultConfigYAML is what the first start writes to DIR/config.yaml.
const DefaultConfigYAML = `# sshward-playback settings (read at start).
#
# retention: how long a finished recording of each tier is kept after it
# ended. Units: d (days), h, m, s. 0 keeps recordings for ever.
retention:
  staging: 30d
  production: 365d
  break-glass: 0
# default applies to tiers not listed above (0: keep for ever).
default: 0
# sweep_interval: how often expired recordings are deleted.
sweep_interval: 1h
# recordings: where finished recordings are archived besides this disk. With
# s3, every finished recording is uploaded to an S3-compatible bucket (the
# source of truth replicas share; sshward-playback reindex rebuilds from it).
# The secret key comes from secret_key_file (0600) or $SSHWARD_S3_SECRET_KEY.
# recordings:
#   s3:
#     endpoint: https://s3.example.com:9000
#     bucket: recordings
#     prefix: sshward/
#     region: us-east-1
#     access_key: sshward-playback
#     secret_key_file: /etc/sshward/s3-secret-key
#     ca_file: /etc/sshward/s3-ca.pem     # when the server's certificate is not publicly trusted
# encryption: recordings encrypted at rest (age X25519) on this disk, in the
# bucket and in the agents' spools. recipients encrypt what is written from
# now on; identity_file (0600; age-keygen output, several keys allowed) or
# identities (key URIs, file:PATH) decrypt. Rotation: add the new recipient
# and its identity; keep the old identity while old recordings are kept.
#   encryption:
#     recipients: [age1...]
#     identity_file: /etc/sshward/recordings.key
`

// Settings are the contents of DIR/config.yaml.
type Settings struct {
	Retention Retention
	// SweepInterval is how often the retention sweeper runs.
	SweepInterval time.Duration
	// S3, when set, is the bucket finished recordings are archived to.
	S3 *S3Settings
	// Encryption, when set, encrypts recordings at rest (recorder/atrest).
	Encryption *atrest.Keys
}

// EncryptionSettings are recordings.encryption of config.yaml.
type EncryptionSettings struct {
	Recipients   []string `yaml:"recipients"`
	IdentityFile string   `yaml:"identity_file"` // a path
	Identity     string   `yaml:"identity"`      // a key URI (file:PATH)
	Identities   []string `yaml:"identities"`    // key URIs, for several files
}

// keys parses the recipients and loads the identities.
func (e *EncryptionSettings) keys() (*atrest.Keys, error) {
	if len(e.Recipients) == 0 {
		return nil, errors.New("recordings.encryption.recipients: at least one age1... recipient is required")
	}
	rcpts, err := atrest.ParseRecipients(e.Recipients)
	if err != nil {
		return nil, fmt.Errorf("recordings.encryption.recipients: %w", err)
	}
	uris := append([]string(nil), e.Identities...)
	if e.Identity != "" {
		uris = append(uris, e.Identity)
	}
	if e.IdentityFile != "" {
		uris = append(uris, "file:"+e.IdentityFile)
	}
	if len(uris) == 0 {
		return nil, errors.New("recordings.encryption: identity_file (or identity, identities) is required: the server decrypts what it shows")
	}
	k := &atrest.Keys{Recipients: rcpts, RecipientStrings: e.Recipients}
	for _, u := range uris {
		ids, err := atrest.LoadIdentities(u)
		if err != nil {
			return nil, fmt.Errorf("recordings.encryption: %w", err)
		}
		k.Identities = append(k.Identities, ids...)
	}
	return k, nil
}

// S3Settings are recordings.s3 of config.yaml (objstore.Settings).
type S3Settings = objstore.Settings

// Retention is how long finished recordings of each tier are kept; 0 keeps
// them for ever. Tiers not in ByTier get Default.
type Retention struct {
	ByTier  map[string]time.Duration
	Default time.Duration
}

// For returns the retention of tier (0: for ever).
func (r Retention) For(tier string) time.Duration {
	if d, ok := r.ByTier[tier]; ok {
		return d
	}
	return r.Default
}

// LoadSettings reads DIR/config.yaml, writing DefaultConfigYAML first when
// it does not exist. A bad file is refused with the reason, never half
// applied.
func LoadSettings(dir string) (*Settings, error) {
	path := filepath.Join(dir, ConfigFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.WriteFile(path, []byte(DefaultConfigYAML), 0o600); err != nil {
			return nil, fmt.Errorf("playback: write %s: %w", path, err)
		}
		data = []byte(DefaultConfigYAML)
	} else if err != nil {
		return nil, fmt.Errorf("playback: read settings: %w", err)
	}
	st, err := ParseSettings(data)
	if err != nil {
		return nil, fmt.Errorf("playback: %s: %w", path, err)
	}
	return st, nil
}

// ParseSettings parses the YAML of config.yaml.
func ParseSettings(data []byte) (*Settings, error) {
	var raw struct {
		Retention     map[string]string `yaml:"retention"`
		Default       string            `yaml:"default"`
		SweepInterval string            `yaml:"sweep_interval"`
		Recordings    struct {
			S3         *S3Settings         `yaml:"s3"`
			Encryption *EncryptionSettings `yaml:"encryption"`
		} `yaml:"recordings"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) { // EOF: an empty file
		return nil, fmt.Errorf("parse: %w", err)
	}
	st := &Settings{Retention: Retention{ByTier: map[string]time.Duration{}}, SweepInterval: time.Hour}
	for tier, v := range raw.Retention {
		d, err := ParseRetention(v)
		if err != nil {
			return nil, fmt.Errorf("retention of %s: %w", tier, err)
		}
		st.Retention.ByTier[tier] = d
	}
	if raw.Default != "" {
		d, err := ParseRetention(raw.Default)
		if err != nil {
			return nil, fmt.Errorf("default retention: %w", err)
		}
		st.Retention.Default = d
	}
	if raw.SweepInterval != "" {
		d, err := ParseRetention(raw.SweepInterval)
		if err != nil || d < time.Second {
			return nil, fmt.Errorf("sweep_interval %q must be a duration of at least 1s", raw.SweepInterval)
		}
		st.SweepInterval = d
	}
	if s3 := raw.Recordings.S3; s3 != nil {
		if err := s3.Check("recordings.s3"); err != nil {
			return nil, err
		}
		st.S3 = s3
	}
	if e := raw.Recordings.Encryption; e != nil {
		k, err := e.keys()
		if err != nil {
			return nil, err
		}
		st.Encryption = k
	}
	return st, nil
}

// ParseRetention reads "30d", "12h", "90m", "0" or "forever" (0).
func ParseRetention(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "0", "forever", "for ever", "":
		return 0, nil
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseFloat(n, 64)
		if err != nil || days < 0 || days > 100*365 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(days * 24 * float64(time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration like 30d, 12h or 0", s)
	}
	return d, nil
}
