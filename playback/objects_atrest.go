package playback

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"

	"filippo.io/age"

	"github.com/sshward/sshward/playback/objstore"
	"github.com/sshward/sshward/recorder/atrest"
)

// ageMagic starts every age file (the stream of an encrypted object).
const ageMagic = "age-encryption.org/v1\n"

// spillAbove is the object size past which an object's ciphertext is
// staged in a temporary file (0600, removed) rather than in memory.
const spillAbove = 8 << 20

// EncryptObjects returns obj with every object put encrypted to keys'
// recipients (one age stream per object) and every encrypted object got
// decrypted with its identities; objects stored in plaintext (before
// encryption was configured) read as they are. Nil keys: obj.
func EncryptObjects(obj Objects, keys *atrest.Keys) Objects {
	if obj == nil || keys == nil || len(keys.Recipients) == 0 {
		return obj
	}
	return &sealedObjects{obj: obj, keys: keys}
}

type sealedObjects struct {
	obj  Objects
	keys *atrest.Keys
}

func (o *sealedObjects) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	var (
		sink  io.Writer
		buf   *bytes.Buffer
		spill *os.File
	)
	if size <= spillAbove {
		buf = bytes.NewBuffer(make([]byte, 0, size+512))
		sink = buf
	} else {
		f, err := os.CreateTemp("", "sshward-put-")
		if err != nil {
			return fmt.Errorf("encrypt %s: %w", key, err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		spill, sink = f, f
	}
	w, err := age.Encrypt(sink, o.keys.Recipients...)
	if err != nil {
		return fmt.Errorf("encrypt %s: %w", key, err)
	}
	n, err := io.Copy(w, r)
	if err == nil {
		err = w.Close()
	}
	if err == nil && n != size {
		err = fmt.Errorf("read %d bytes, want %d", n, size)
	}
	if err != nil {
		return fmt.Errorf("encrypt %s: %w", key, err)
	}
	if buf != nil {
		return o.obj.Put(ctx, key, bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	}
	end, err := spill.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	return o.obj.Put(ctx, key, io.NewSectionReader(spill, 0, end), end)
}

func (o *sealedObjects) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	rc, err := o.obj.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(rc, 64<<10)
	head, _ := br.Peek(len(ageMagic))
	var plain io.Reader = br
	if string(head) == ageMagic {
		d, err := age.Decrypt(br, o.keys.Identities...)
		if err != nil {
			rc.Close()
			var nm *age.NoIdentityMatchError
			if errors.As(err, &nm) {
				return nil, fmt.Errorf("object %s: %w", key, atrest.ErrNoIdentity)
			}
			return nil, fmt.Errorf("decrypt object %s: %w", key, err)
		}
		plain = d
	}
	if off > 0 {
		if _, err := io.CopyN(io.Discard, plain, off); err != nil {
			rc.Close()
			return nil, fmt.Errorf("object %s: %w", key, err)
		}
	}
	if n >= 0 {
		plain = io.LimitReader(plain, n)
	}
	return struct {
		io.Reader
		io.Closer
	}{plain, rc}, nil
}

// Size is the stored (encrypted) size.
func (o *sealedObjects) Size(ctx context.Context, key string) (int64, error) {
	return o.obj.Size(ctx, key)
}

func (o *sealedObjects) Delete(ctx context.Context, key string) error { return o.obj.Delete(ctx, key) }

func (o *sealedObjects) List(ctx context.Context, prefix string) iter.Seq2[objstore.Object, error] {
	return o.obj.List(ctx, prefix)
}
