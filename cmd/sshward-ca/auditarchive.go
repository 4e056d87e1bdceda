package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sshward/sshward/ca/auditarchive"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/playback/objstore"
)

// auditConfig is audit: of config.yaml.
type auditConfig struct {
	// Archive copies the audit log to object storage in sealed, chained
	// segments (ca/auditarchive); every replica may run it (they write the
	// same objects).
	Archive *auditArchiveConfig `yaml:"archive"`
}

type auditArchiveConfig struct {
	S3      *objstore.Settings `yaml:"s3"`
	Segment int                `yaml:"segment"` // events per segment (default 1000; never change it for a bucket)
	Every   string             `yaml:"every"`   // how often full segments are looked for (default 1m)
}

// openAuditArchive opens the bucket of audit.archive.s3 (nil, nil without
// one) and returns the segment size and interval.
func openAuditArchive(ctx context.Context, c *config, log *slog.Logger) (*objstore.Bucket, int, time.Duration, error) {
	a := c.Audit.Archive
	if a == nil || a.S3 == nil {
		return nil, 0, 0, nil
	}
	if err := a.S3.Check("audit.archive.s3"); err != nil {
		return nil, 0, 0, err
	}
	every := time.Minute
	if a.Every != "" {
		d, err := time.ParseDuration(a.Every)
		if err != nil || d < time.Second {
			return nil, 0, 0, fmt.Errorf("audit.archive.every %q must be a duration of at least 1s", a.Every)
		}
		every = d
	}
	if a.Segment < 0 {
		return nil, 0, 0, fmt.Errorf("audit.archive.segment %d must be positive", a.Segment)
	}
	seg := a.Segment
	if seg == 0 {
		seg = auditarchive.DefaultSegment
	}
	b, err := objstore.OpenSettings(ctx, a.S3, "audit.archive.s3", log)
	return b, seg, every, err
}

// verifyAuditArchive is sshward-ca audit verify --from-s3: the chain of
// sealed segments in the bucket, read from the bucket alone (the CA need
// not run, its store is not opened).
func (e *env) verifyAuditArchive(ctx context.Context, dir string, asJSON bool) error {
	l := layout{dir}
	if err := l.check(); err != nil {
		return err
	}
	cfg, err := loadConfig(l.config())
	if err != nil {
		return err
	}
	b, _, _, err := openAuditArchive(ctx, cfg, nil)
	if err != nil {
		return err
	}
	if b == nil {
		return fmtUsage("%s has no audit.archive.s3: nothing to verify in object storage", l.config())
	}
	var res struct {
		OK bool `json:"ok"`
		auditarchive.Report
		Error string `json:"error,omitempty"`
		Seq   uint64 `json:"seq,omitempty"`
	}
	rep, err := auditarchive.Verify(ctx, b)
	res.OK, res.Report = err == nil, rep
	if err != nil {
		res.Error = err.Error()
		var ce *store.ChainError
		if errors.As(err, &ce) {
			res.Seq = ce.Seq
		}
	}
	if asJSON {
		if err := cli.JSON(e.stdout, res); err != nil {
			return err
		}
	} else if res.OK {
		fmt.Fprintf(e.stdout, "audit archive intact: %d segments, %d records, head %s, last seal %s\n", rep.Segments, rep.Records, shortHash(rep.Head), shortHash(rep.LastSeal))
	}
	if !res.OK {
		return fmt.Errorf("audit archive broken: %s", res.Error)
	}
	return nil
}
