package testimage

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/google/go-cmp/cmp"
)

func TestContext(t *testing.T) {
	src := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(src, []byte("#!/bin/sh\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	tarball, err := Context(map[string]File{
		"rootfs/bin/prog": {Source: src},
		"rootfs/bin/sh":   {Link: "busybox"},
		"rootfs/tmp":      {Dir: true, Mode: 0o777 | os.ModeSticky},
		"./a.txt":         {Data: []byte("hi")},
	}, "FROM scratch\n")
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		Name string
		Type byte
		Mode int64
		Link string
		Data string
	}
	var got []entry
	tr := tar.NewReader(bytes.NewReader(tarball))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		got = append(got, entry{h.Name, h.Typeflag, h.Mode, h.Linkname, string(data)})
	}
	want := []entry{
		{"Dockerfile", tar.TypeReg, 0o644, "", "FROM scratch\n"},
		{"a.txt", tar.TypeReg, 0o644, "", "hi"},
		{"rootfs/bin/prog", tar.TypeReg, 0o750, "", "#!/bin/sh\n"},
		{"rootfs/bin/sh", tar.TypeSymlink, 0o777, "busybox", ""},
		{"rootfs/tmp/", tar.TypeDir, 0o1777, "", ""},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tar entries (-want +got):\n%s", diff)
	}
}

func TestContextRefusesBadFiles(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]File
	}{
		{"empty path", map[string]File{"": {Data: []byte("x")}}},
		{"absolute", map[string]File{"/etc/passwd": {Data: []byte("x")}}},
		{"escapes", map[string]File{"a/../../x": {Data: []byte("x")}}},
		{"two kinds", map[string]File{"x": {Data: []byte("x"), Link: "y"}}},
		{"dockerfile", map[string]File{"Dockerfile": {Data: []byte("x")}}},
		{"missing source", map[string]File{"x": {Source: "/nonexistent/file"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Context(tt.files, "FROM scratch\n")
			if err == nil {
				t.Fatal("Context: no error")
			}
		})
	}
}

func TestBusybox(t *testing.T) {
	ctx := context.Background()
	c := Client(t)
	extra := filepath.Join(t.TempDir(), "hello.txt")
	if err := os.WriteFile(extra, []byte("hello from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tag := BusyboxWith(ctx, t, "TestBusybox", map[string]File{"/data/hello.txt": {Source: extra}})

	img, err := c.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatalf("inspect the built image: %v", err)
	}
	if img.Config == nil || img.Config.Labels[Label] != "1" {
		t.Errorf("image labels = %v, want %s=1", img.Config, Label)
	}

	out := runOnce(ctx, t, tag, "cat /data/hello.txt; id -un; ls -ld /tmp | cut -c1-10; echo to stderr >&2")
	want := "hello from the host\nroot\ndrwxrwxrwt\nto stderr\n"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
}

func TestBuildReportsBuildErrors(t *testing.T) {
	ctx := context.Background()
	c := Client(t)
	tarball, err := Context(nil, "FROM scratch\nCOPY missing /\n")
	if err != nil {
		t.Fatal(err)
	}
	tag := uniqueTag(t, t.Name())
	err = BuildImage(ctx, c, tag, tarball)
	if err == nil {
		c.ImageRemove(ctx, tag, image.RemoveOptions{Force: true})
		t.Fatal("BuildImage: no error for a COPY of a missing file")
	}
	if !strings.Contains(err.Error(), "missing") {
		t.Errorf("BuildImage error %q does not name the missing file", err)
	}
}

// runOnce runs sh -c script in a container of img and returns its output,
// stdout then stderr.
func runOnce(ctx context.Context, t *testing.T, img, script string) string {
	t.Helper()
	c := Client(t)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	created, err := c.ContainerCreate(ctx, &container.Config{
		Image:  img,
		Cmd:    []string{"/bin/sh", "-c", script},
		Labels: map[string]string{Label: "1"},
	}, nil, nil, nil, "")
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	t.Cleanup(func() {
		c.ContainerRemove(context.WithoutCancel(ctx), created.ID, container.RemoveOptions{Force: true})
	})
	if err := c.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start container: %v", err)
	}
	waitC, errC := c.ContainerWait(ctx, created.ID, container.WaitConditionNotRunning)
	select {
	case <-waitC:
	case err := <-errC:
		t.Fatalf("wait container: %v", err)
	}
	logs, err := c.ContainerLogs(ctx, created.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("container logs: %v", err)
	}
	defer logs.Close()
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, logs); err != nil {
		t.Fatalf("read logs: %v", err)
	}
	return stdout.String() + stderr.String()
}
