package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sshward/sshward/ca/auditarchive"
	"github.com/sshward/sshward/ca/notify"
	"github.com/sshward/sshward/ca/server"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/playback/objstore"
	"github.com/sshward/sshward/plugins"
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
	// Prune drops archived events from the store once their segment is
	// confirmed in the bucket (auditarchive.Prune), keeping a checkpoint;
	// what bounds an etcd store. Notifiers' cursors hold it back.
	Prune bool `yaml:"prune"`
}

// notifierFloor is the lowest cursor of the configured notifier plugins:
// the last event pruning may drop (nil without notifiers).
func notifierFloor(db *store.DB, cfgs []pluginConfig) func(context.Context) (uint64, error) {
	var names []string
	for _, pc := range cfgs {
		if pc.Kind == string(plugins.KindNotifier) {
			names = append(names, pc.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	return func(ctx context.Context) (uint64, error) {
		floor := ^uint64(0)
		for _, n := range names {
			c, err := notify.Cursor(ctx, db, n)
			if err != nil {
				return 0, err
			}
			floor = min(floor, c)
		}
		return floor, nil
	}
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

// verifyArchivedPart checks, for a store whose audit log was pruned up to
// v.Archived, the archive in audit.archive.s3 and its link to the store's
// part (auditarchive.VerifyWithStore). It returns the segments checked.
func (e *env) verifyArchivedPart(ctx context.Context, dir string, a admin, v server.VerifyResult) (int, error) {
	l := layout{dir}
	cfg, err := loadConfig(l.config())
	if err != nil {
		return 0, err
	}
	b, _, _, err := openAuditArchive(ctx, cfg, nil)
	if err != nil {
		return 0, err
	}
	if b == nil {
		return 0, fmt.Errorf("records 1-%d were archived and pruned from the store, and %s has no audit.archive.s3 to check them in", v.Archived.Seq, l.config())
	}
	rep, err := auditarchive.VerifyWithStore(ctx, b, store.AuditReport{Records: v.Records, Head: v.Head, Archived: *v.Archived}, a)
	return rep.Segments, err
}

// auditEvents is audit list's read: events the store pruned come from the
// archive (audit.archive.s3) when this config names it; otherwise note
// says where they are.
func (e *env) auditEvents(ctx context.Context, dir string, a admin, f store.AuditFilter) (evs []store.AuditEvent, note string, err error) {
	cfg, err := loadConfig(layout{dir}.config())
	if err != nil {
		return nil, "", err
	}
	if arc := cfg.Audit.Archive; arc != nil && arc.S3 != nil && arc.Prune {
		b, _, _, err := openAuditArchive(ctx, cfg, nil)
		if err != nil {
			return nil, "", err
		}
		evs, through, err := auditarchive.Events(ctx, b, f.AfterSeq, f.Type, f.Limit)
		if err != nil {
			return nil, "", err
		}
		if f.Limit > 0 && len(evs) >= f.Limit {
			return evs, "", nil
		}
		g := f
		g.AfterSeq = max(f.AfterSeq, through)
		if f.Limit > 0 {
			g.Limit = f.Limit - len(evs)
		}
		more, err := a.Audit(ctx, g)
		return append(evs, more...), "", err
	}
	evs, err = a.Audit(ctx, f)
	if err != nil {
		return nil, "", err
	}
	if len(evs) > 0 && evs[0].Seq == f.AfterSeq+1 {
		return evs, "", nil // nothing skipped
	}
	if v := a.VerifyAudit(ctx); v.Archived != nil && f.AfterSeq < v.Archived.Seq {
		note = fmt.Sprintf("note: events %d-%d were archived to object storage and pruned from the store; list them with audit.archive (prune: true) in config.yaml", f.AfterSeq+1, v.Archived.Seq)
	}
	return evs, note, nil
}
