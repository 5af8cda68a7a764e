package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// A snapshot keeps the volume's content as it was; a volume created from it starts with that content; both are
// idempotent as the sidecars retry them; a published volume is the volume's directory at the target (root only:
// bind mounts).
func TestSnapshotRestoresTheContentItWasTakenWith(t *testing.T) {
	ctx := context.Background()
	d := &driver{name: "test.csi", nodeID: "node", stateDir: t.TempDir()}
	fsCap := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}}

	if _, err := d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-1"}); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(d.volumeDir("pvc-1"), "PG_VERSION"), "before")
	snap := &csi.CreateSnapshotRequest{Name: "snapshot-1", SourceVolumeId: "pvc-1"}
	first, err := d.CreateSnapshot(ctx, snap)
	if err != nil || !first.Snapshot.ReadyToUse || first.Snapshot.SizeBytes != 6 {
		t.Fatalf("snapshot: %v %v", first, err)
	}
	write(t, filepath.Join(d.volumeDir("pvc-1"), "PG_VERSION"), "after")
	again, err := d.CreateSnapshot(ctx, snap)
	if err != nil || !again.Snapshot.CreationTime.AsTime().Equal(first.Snapshot.CreationTime.AsTime()) {
		t.Fatalf("a repeated CreateSnapshot is not the same snapshot: %v %v", again, err)
	}
	_, err = d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snapshot-1", SourceVolumeId: "pvc-2"})
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("the same snapshot name of another volume: %v", err)
	}

	source := &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: "snapshot-1"},
	}}
	for i := 0; i < 2; i++ {
		if _, err := d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-2", VolumeContentSource: source}); err != nil {
			t.Fatal(err)
		}
	}
	if got := read(t, filepath.Join(d.volumeDir("pvc-2"), "PG_VERSION")); got != "before" {
		t.Fatalf("restored %q, want the snapshot's %q", got, "before")
	}
	missing := &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: "snapshot-9"},
	}}
	if _, err := d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-3", VolumeContentSource: missing}); status.Code(err) != codes.NotFound {
		t.Fatalf("a volume from a missing snapshot: %v", err)
	}
	if _, err := d.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "../escape"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a volume id with a path: %v", err)
	}

	if os.Geteuid() == 0 {
		target := filepath.Join(t.TempDir(), "mount")
		publish := &csi.NodePublishVolumeRequest{VolumeId: "pvc-2", TargetPath: target, VolumeCapability: fsCap}
		for i := 0; i < 2; i++ {
			if _, err := d.NodePublishVolume(ctx, publish); err != nil {
				t.Fatal(err)
			}
		}
		write(t, filepath.Join(target, "written"), "through the mount")
		if got := read(t, filepath.Join(d.volumeDir("pvc-2"), "written")); got != "through the mount" {
			t.Fatalf("the volume does not hold what was written at the target: %q", got)
		}
		for i := 0; i < 2; i++ {
			if _, err := d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pvc-2", TargetPath: target}); err != nil {
				t.Fatal(err)
			}
		}
		if mounted(target) || exists(target) {
			t.Fatalf("%s is still there after unpublish", target)
		}
	}

	for _, id := range []string{"pvc-1", "pvc-2"} {
		if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: "snapshot-1"}); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{d.volumeDir("pvc-1"), d.volumeDir("pvc-2"), d.snapshotDir("snapshot-1")} {
		if exists(dir) {
			t.Fatalf("%s left after deletion", dir)
		}
	}
}
