// Package testimage builds small Docker images for tests with the real
// Engine, from an in-memory tar build context, since no registry can be
// reached: a busybox image FROM scratch holding Debian's static busybox, and
// images that pack any given static binaries (such as the caravan binary
// for the chaos tests).
//
// Every image is tagged uniquely ("caravan-test-<name>:<random>"), carries
// the label caravan.test=1 and is removed when the test ends, even when it
// fails. Nothing else on the Engine is touched.
package testimage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/exec"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/caravan-sched/caravan/internal/testenv"
)

// Label marks every image and container a test creates, so that they can
// be told apart from everything else on the Engine.
const Label = "caravan.test"

// BuildTimeout bounds one image build.
const BuildTimeout = 2 * time.Minute

// Client returns an Engine client from the environment (DOCKER_HOST, …),
// negotiating the API version, closed when the test ends. It skips the test
// (fails it under CARAVAN_TEST_STRICT=1) when no Engine answers.
func Client(t testing.TB) *client.Client {
	t.Helper()
	testenv.RequireDocker(t)
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Build builds an image from a Dockerfile and the files of its build
// context (keyed by their path in the context, see Context) and returns its
// unique tag. The image is removed when the test ends.
func Build(ctx context.Context, t testing.TB, name string, files map[string]File, dockerfile string) string {
	t.Helper()
	c := Client(t)
	tar, err := Context(files, dockerfile)
	if err != nil {
		t.Fatalf("build context for image %s: %v", name, err)
	}
	tag := uniqueTag(t, name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_, err := c.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !cerrdefs.IsNotFound(err) { // not found: the build failed
			t.Errorf("remove test image %s: %v", tag, err)
		}
	})
	if err := BuildImage(ctx, c, tag, tar); err != nil {
		t.Fatalf("%v", err)
	}
	return tag
}

// BuildImage sends the tar build context to the Engine and builds it as tag
// with the classic builder, labelled caravan.test=1. It waits for the end
// of the build (at most BuildTimeout) and returns the build's own error
// message, with its output, when it fails. The caller removes the image.
func BuildImage(ctx context.Context, c *client.Client, tag string, tar []byte) error {
	ctx, cancel := context.WithTimeout(ctx, BuildTimeout)
	defer cancel()
	resp, err := c.ImageBuild(ctx, bytes.NewReader(tar), build.ImageBuildOptions{
		Tags:        []string{tag},
		Labels:      map[string]string{Label: "1"},
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1,
	})
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	defer resp.Body.Close()
	var out strings.Builder
	if err := readBuildOutput(resp.Body, &out); err != nil {
		return fmt.Errorf("build image %s: %w\n%s", tag, err, out.String())
	}
	return nil
}

// buildMessage is one JSON object of the Engine's build output.
type buildMessage struct {
	Stream      string `json:"stream"`
	Error       string `json:"error"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
}

// readBuildOutput copies the build's text output to w and returns the
// error the build reported, if any.
func readBuildOutput(r io.Reader, w io.Writer) error {
	dec := json.NewDecoder(r)
	for {
		var m buildMessage
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read build output: %w", err)
		}
		io.WriteString(w, m.Stream)
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			return errors.New(m.ErrorDetail.Message)
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
	}
}

// uniqueTag makes "caravan-test-<name>:<random>" with name reduced to what
// a repository name may hold.
func uniqueTag(t testing.TB, name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	repo := strings.Trim(b.String(), "-_.")
	if repo == "" {
		repo = "image"
	}
	if len(repo) > 64 {
		repo = repo[:64]
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatalf("random tag: %v", err)
	}
	return "caravan-test-" + repo + ":" + hex.EncodeToString(rnd[:])
}

// Busybox builds an image FROM scratch holding the host's static busybox
// as /bin/busybox, a link to it for each of its applets in /bin (sh, sleep,
// echo, cat, tail, dd, nc, httpd, …), a world-writable /tmp and an
// /etc/passwd with root and nobody. It returns the image's unique tag.
func Busybox(ctx context.Context, t testing.TB, name string) string {
	t.Helper()
	return BusyboxWith(ctx, t, name, nil)
}

// BusyboxWith builds the busybox image with extra files added, keyed by
// their absolute path in the image, such as
// {"/bin/caravan": {Source: testenv.CaravanBinary(t)}}.
func BusyboxWith(ctx context.Context, t testing.TB, name string, extra map[string]File) string {
	t.Helper()
	files, err := BusyboxFiles(testenv.BusyboxPath(t))
	if err != nil {
		t.Fatalf("busybox image %s: %v", name, err)
	}
	for p, f := range extra {
		files[RootFS+"/"+strings.TrimPrefix(p, "/")] = f
	}
	return Build(ctx, t, name, files, RootFSDockerfile)
}

// RootFS is the context folder that RootFSDockerfile copies to the image's
// root.
const RootFS = "rootfs"

// RootFSDockerfile builds an image FROM scratch out of the context's rootfs
// folder.
const RootFSDockerfile = "FROM scratch\nCOPY " + RootFS + "/ /\nCMD [\"/bin/sh\"]\n"

// BusyboxFiles returns the build context files of the busybox image under
// RootFS, for RootFSDockerfile: the binary at busybox, a link per applet
// (as its --list prints them), /tmp, /etc/passwd and /etc/group.
func BusyboxFiles(busybox string) (map[string]File, error) {
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets: %w", err)
	}
	files := map[string]File{
		RootFS + "/bin/busybox": {Source: busybox, Mode: 0o755},
		RootFS + "/tmp":         {Dir: true, Mode: fs.ModeSticky | 0o777},
		RootFS + "/etc/passwd":  {Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		RootFS + "/etc/group":   {Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		RootFS + "/usr/bin/env": {Link: "/bin/busybox"},
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		files[RootFS+"/bin/"+applet] = File{Link: "busybox"}
	}
	return files, nil
}
