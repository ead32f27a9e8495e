package testimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
)

// ErrBadFile means a File of a build context is malformed: a path that
// leaves the context, or an entry that is neither data, source, link nor
// directory.
var ErrBadFile = errors.New("bad build context file")

// File is one entry of a build context: a regular file (Data, or Source
// read from the host), a symbolic link (Link) or a directory (Dir).
type File struct {
	// Data is the content of a regular file.
	Data []byte
	// Source, when Data is nil, is a file on the host whose content is
	// used; its permission bits are kept unless Mode is set.
	Source string
	// Link, when set, makes the entry a symbolic link pointing to Link.
	Link string
	// Dir makes the entry a directory.
	Dir bool
	// Mode holds the permission bits (and sticky bit); 0 means 0644 for
	// files, 0755 for directories and the source's own bits for Source.
	Mode fs.FileMode
}

// Context writes a tar build context holding the Dockerfile and files,
// keyed by their slash-separated path relative to the context's root. The
// entries are sorted, so equal inputs give equal bytes and the Engine's
// build cache can reuse layers.
func Context(files map[string]File, dockerfile string) ([]byte, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		clean, err := contextPath(name)
		if err != nil {
			return nil, err
		}
		if clean == "Dockerfile" {
			return nil, fmt.Errorf("%q: the Dockerfile is given on its own: %w", name, ErrBadFile)
		}
		names = append(names, name)
	}
	slices.Sort(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := writeFile(tw, "Dockerfile", File{Data: []byte(dockerfile)}); err != nil {
		return nil, err
	}
	for _, name := range names {
		clean, _ := contextPath(name)
		if err := writeFile(tw, clean, files[name]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close build context: %w", err)
	}
	return buf.Bytes(), nil
}

// contextPath cleans a context path and refuses one that is empty,
// absolute or leaves the context.
func contextPath(name string) (string, error) {
	clean := path.Clean(name)
	switch {
	case name == "" || clean == ".":
		return "", fmt.Errorf("empty path: %w", ErrBadFile)
	case path.IsAbs(clean):
		return "", fmt.Errorf("%q is absolute; paths are relative to the context: %w", name, ErrBadFile)
	case clean == ".." || strings.HasPrefix(clean, "../"):
		return "", fmt.Errorf("%q leaves the build context: %w", name, ErrBadFile)
	}
	return clean, nil
}

func writeFile(tw *tar.Writer, name string, f File) error {
	kinds := 0
	for _, set := range []bool{f.Data != nil, f.Source != "", f.Link != "", f.Dir} {
		if set {
			kinds++
		}
	}
	if kinds > 1 {
		return fmt.Errorf("%q: give only one of data, source, link and dir: %w", name, ErrBadFile)
	}
	hdr := &tar.Header{Name: name, Mode: int64(f.Mode.Perm())}
	if f.Mode&fs.ModeSticky != 0 {
		hdr.Mode |= 0o1000
	}
	data := f.Data
	switch {
	case f.Link != "":
		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.Link, 0o777
	case f.Dir:
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		if f.Mode == 0 {
			hdr.Mode = 0o755
		}
	case f.Source != "":
		b, err := os.ReadFile(f.Source)
		if err != nil {
			return fmt.Errorf("%q: read source: %w", name, err)
		}
		data = b
		if f.Mode == 0 {
			st, err := os.Stat(f.Source)
			if err != nil {
				return fmt.Errorf("%q: stat source: %w", name, err)
			}
			hdr.Mode = int64(st.Mode().Perm())
		}
		fallthrough
	default:
		hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(data))
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
		}
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%q: write tar header: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("%q: write tar data: %w", name, err)
	}
	return nil
}
