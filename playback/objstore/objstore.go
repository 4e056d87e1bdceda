// Package objstore keeps objects (finished recordings: casts and their
// metadata) in an S3-compatible bucket, for playback servers that share
// their recordings (several replicas, one source of truth). It is a thin
// layer over the AWS SDK for Go v2's S3 client that adds what sshward
// needs and S3-compatible servers accept:
//
//   - Put streams an object of known size: one PUT up to PartSize, else a
//     multipart upload with parts of PartSize (≥ 5 MiB, S3's minimum),
//     aborted on any failure so that no half upload is left to pay for.
//   - Request checksums only where the API requires them: S3-compatible
//     servers refuse the SDK's default trailing checksums. Every PUT and
//     part names its Content-MD5, which they all check: a body cut short
//     by the network is refused, not stored as the whole object (versitygw
//     stores it otherwise). Integrity of content is sshward's own: the
//     host-signed metadata holds the cast's sha256, which the playback
//     server checks when it serves the cast.
//   - ErrNotFound for a missing object, whatever the call.
//
// Happy path:
//
//	b, _ := objstore.Open(ctx, objstore.Config{Endpoint: "https://s3.example:9000", Bucket: "rec",
//		Prefix: "sshward/", AccessKey: ak, SecretKey: sk})
//	_ = b.Put(ctx, "casts/ID.cast", f, size)
//	rc, _ := b.Get(ctx, "casts/ID.cast", 0, -1)
package objstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Sizes of multipart uploads.
const (
	MinPartSize     = 5 << 20 // S3's least part size (but the last)
	DefaultPartSize = 16 << 20
	maxParts        = 10000 // S3's most parts per upload
)

// ErrNotFound: no such object (or bucket).
var ErrNotFound = errors.New("objstore: not found")

// Config says which bucket to use and how to reach it.
type Config struct {
	// Endpoint is the server's base URL (https://host:port); required:
	// sshward talks to S3-compatible servers, not only AWS.
	Endpoint string
	// Bucket must exist (Open checks it); Prefix is put before every key
	// ("sshward/" keeps one bucket shareable).
	Bucket, Prefix string
	// Region is what the server expects in signatures (default us-east-1).
	Region string
	// AccessKey and SecretKey sign requests (AWS signature v4).
	AccessKey, SecretKey string
	// VirtualHosted addresses the bucket as BUCKET.host instead of
	// host/BUCKET (path style, what most S3-compatible servers want).
	VirtualHosted bool
	// PartSize is the size of multipart parts (default 16 MiB, at least
	// 5 MiB); objects up to it go in one PUT.
	PartSize int64
	// HTTPClient carries the requests (e.g. with the server's CA); default
	// http.DefaultClient's transport with a timeout per request.
	HTTPClient *http.Client
	// Logger receives aborted uploads; default discards.
	Logger *slog.Logger
}

// Check names the first bad field. Secrets are never in its messages.
func (c *Config) Check() error {
	switch {
	case c.Endpoint == "":
		return errors.New("objstore: endpoint is required (https://host:port of the S3-compatible server)")
	case !strings.HasPrefix(c.Endpoint, "https://") && !strings.HasPrefix(c.Endpoint, "http://"):
		return fmt.Errorf("objstore: endpoint %q must be an http(s) URL", c.Endpoint)
	case c.Bucket == "":
		return errors.New("objstore: bucket is required")
	case c.AccessKey == "" || c.SecretKey == "":
		return errors.New("objstore: access key and secret key are required")
	case c.PartSize != 0 && c.PartSize < MinPartSize:
		return fmt.Errorf("objstore: part size %d is below S3's minimum of %d", c.PartSize, MinPartSize)
	}
	return nil
}

// Bucket is one bucket (under a prefix). Safe for concurrent use.
type Bucket struct {
	cfg Config
	s3  *s3.Client
}

// Open checks cfg and that the bucket exists and answers.
func Open(ctx context.Context, cfg Config) (*Bucket, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Minute}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	awsCfg := aws.Config{
		Region:      cfg.Region,
		Credentials: credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, ""),
		HTTPClient:  cfg.HTTPClient,
		// S3-compatible servers refuse the SDK's default checksums.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		RetryMaxAttempts:           3,
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(strings.TrimRight(cfg.Endpoint, "/"))
		o.UsePathStyle = !cfg.VirtualHosted
	})
	b := &Bucket{cfg: cfg, s3: client}
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(cfg.Bucket)}); err != nil {
		return nil, b.wrap("open bucket", cfg.Bucket, err)
	}
	return b, nil
}

func (b *Bucket) key(k string) *string { return aws.String(b.cfg.Prefix + k) }

// wrap names the call and the object, and turns a 404 into ErrNotFound.
func (b *Bucket) wrap(op, key string, err error) error {
	var re *smithyhttp.ResponseError
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var nsb *types.NoSuchBucket
	if errors.As(err, &nsk) || errors.As(err, &nf) || errors.As(err, &nsb) ||
		(errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound) {
		return fmt.Errorf("objstore: %s %s: %w", op, key, ErrNotFound)
	}
	return fmt.Errorf("objstore: %s %s at %s: %w", op, key, b.cfg.Endpoint, err)
}

// Put stores size bytes read from r as key, replacing any object there.
// The object appears whole or not at all: a failed multipart upload is
// aborted. r must give exactly size bytes.
func (b *Bucket) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if size < 0 {
		return fmt.Errorf("objstore: put %s: negative size", key)
	}
	if size <= b.cfg.PartSize {
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return fmt.Errorf("objstore: put %s: read: %w", key, err)
		}
		_, err := b.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: b.key(key),
			Body: bytes.NewReader(buf), ContentLength: aws.Int64(size), ContentMD5: contentMD5(buf)})
		if err != nil {
			return b.wrap("put", key, err)
		}
		return nil
	}
	part := max(b.cfg.PartSize, (size+maxParts-1)/maxParts)
	up, err := b.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(b.cfg.Bucket), Key: b.key(key)})
	if err != nil {
		return b.wrap("start upload of", key, err)
	}
	err = b.uploadParts(ctx, key, up.UploadId, r, size, part)
	if err != nil {
		// Abort on a context of its own: ctx may be what ended the upload.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, aerr := b.s3.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: aws.String(b.cfg.Bucket),
			Key: b.key(key), UploadId: up.UploadId}); aerr != nil {
			b.cfg.Logger.WarnContext(ctx, "objstore: cannot abort a failed upload; the bucket's lifecycle rule must remove it",
				"key", b.cfg.Prefix+key, "err", aerr)
		}
		return err
	}
	return nil
}

func (b *Bucket) uploadParts(ctx context.Context, key string, uploadID *string, r io.Reader, size, part int64) error {
	var done []types.CompletedPart
	buf := make([]byte, part)
	for n, off := int32(1), int64(0); off < size; n++ {
		chunk := buf[:min(part, size-off)]
		if _, err := io.ReadFull(r, chunk); err != nil {
			return fmt.Errorf("objstore: put %s: read at %d: %w", key, off, err)
		}
		out, err := b.s3.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(b.cfg.Bucket), Key: b.key(key),
			UploadId: uploadID, PartNumber: aws.Int32(n), Body: bytes.NewReader(chunk),
			ContentLength: aws.Int64(int64(len(chunk))), ContentMD5: contentMD5(chunk)})
		if err != nil {
			return b.wrap(fmt.Sprintf("upload part %d of", n), key, err)
		}
		done = append(done, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(n)})
		off += int64(len(chunk))
	}
	_, err := b.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(b.cfg.Bucket),
		Key: b.key(key), UploadId: uploadID, MultipartUpload: &types.CompletedMultipartUpload{Parts: done}})
	if err != nil {
		return b.wrap("complete upload of", key, err)
	}
	return nil
}

// contentMD5 is the Content-MD5 header of body. Servers refuse a body
// that does not match it: without it an S3-compatible server may store
// the part of a body that arrived before the connection was cut (versitygw
// does), as a whole object.
func contentMD5(body []byte) *string {
	sum := md5.Sum(body)
	return aws.String(base64.StdEncoding.EncodeToString(sum[:]))
}

// Get reads n bytes of key from off (n < 0: to the end).
func (b *Bucket) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: b.key(key)}
	switch {
	case n == 0:
		return io.NopCloser(strings.NewReader("")), nil
	case n > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	case off > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", off))
	}
	out, err := b.s3.GetObject(ctx, in)
	if err != nil {
		return nil, b.wrap("get", key, err)
	}
	return out.Body, nil
}

// Size returns the size of key.
func (b *Bucket) Size(ctx context.Context, key string) (int64, error) {
	out, err := b.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: b.key(key)})
	if err != nil {
		return 0, b.wrap("stat", key, err)
	}
	return aws.ToInt64(out.ContentLength), nil
}

// Delete removes key; a missing key is no error (S3 says the same).
func (b *Bucket) Delete(ctx context.Context, key string) error {
	if _, err := b.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: b.key(key)}); err != nil {
		return b.wrap("delete", key, err)
	}
	return nil
}

// Object is one listed object.
type Object struct {
	Key  string // without the bucket's Prefix
	Size int64
}

// List yields the objects whose keys start with prefix, in key order.
// Iteration stops at the first error, which is yielded.
func (b *Bucket) List(ctx context.Context, prefix string) iter.Seq2[Object, error] {
	return func(yield func(Object, error) bool) {
		p := s3.NewListObjectsV2Paginator(b.s3, &s3.ListObjectsV2Input{Bucket: aws.String(b.cfg.Bucket), Prefix: b.key(prefix)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				yield(Object{}, b.wrap("list", prefix, err))
				return
			}
			for _, o := range page.Contents {
				if !yield(Object{Key: strings.TrimPrefix(aws.ToString(o.Key), b.cfg.Prefix), Size: aws.ToInt64(o.Size)}, nil) {
					return
				}
			}
		}
	}
}

// PendingUploads counts multipart uploads started under prefix and neither
// completed nor aborted (what a failed Put must not leave).
func (b *Bucket) PendingUploads(ctx context.Context, prefix string) (int, error) {
	out, err := b.s3.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(b.cfg.Bucket), Prefix: b.key(prefix)})
	if err != nil {
		return 0, b.wrap("list uploads", prefix, err)
	}
	return len(out.Uploads), nil
}
