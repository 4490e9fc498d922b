/* inotify on the config dir, for the proxy's event loop.
 *
 * Two ways a config dir changes in real deployments besides editing a file:
 * - a Kubernetes ConfigMap volume swaps a `..data` symlink by rename (the visible
 *   `*.yaml` names are symlinks through it, so no event names a .yaml file);
 * - the whole dir is replaced by rename (`mv new keel.d`): the watch follows the old
 *   inode, so the parent dir is watched too and the watch re-armed on the new one. */
#include "config/config.h"

#include "core/alloc.h"

#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIR_EVENTS (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE | IN_DELETE_SELF | \
                    IN_MOVE_SELF)

struct keel_config_watch {
    int fd;
    int wd;        /* the dir; -1 while it is gone */
    int parent_wd; /* its parent, for the dir being replaced */
    char *dir;
    char *base;    /* the dir's name inside its parent */
};

struct keel_config_watch *keel_config_watch_new(const char *dir)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0)
        return NULL;
    int wd = inotify_add_watch(fd, dir, DIR_EVENTS);
    if (wd < 0) {
        close(fd);
        return NULL;
    }
    struct keel_config_watch *w = keel_alloc(sizeof(*w));
    w->fd = fd;
    w->wd = wd;
    w->dir = keel_strdup(dir);
    char *a = keel_strdup(dir), *b = keel_strdup(dir);
    w->base = keel_strdup(basename(a));
    /* without the parent watch only in-place changes are seen: not fatal */
    w->parent_wd = inotify_add_watch(fd, dirname(b), IN_CREATE | IN_MOVED_TO);
    free(a);
    free(b);
    return w;
}

int keel_config_watch_fd(const struct keel_config_watch *w)
{
    return w->fd;
}

/* Names whose change changes the config: YAML files and the ConfigMap `..data` link. */
static bool relevant_name(const char *s, size_t len)
{
    size_t n = strnlen(s, len);
    if (n == 6 && !memcmp(s, "..data", 6))
        return true;
    if (n == 0 || s[0] == '.')
        return false;
    return (n > 5 && !memcmp(s + n - 5, ".yaml", 5)) || (n > 4 && !memcmp(s + n - 4, ".yml", 4));
}

static bool is_symlink(const struct keel_config_watch *w, const char *name)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", w->dir, name);
    return lstat(path, &st) == 0 && S_ISLNK(st.st_mode);
}

static void rearm(struct keel_config_watch *w)
{
    if (w->wd >= 0)
        inotify_rm_watch(w->fd, w->wd);
    w->wd = inotify_add_watch(w->fd, w->dir, DIR_EVENTS);
}

bool keel_config_watch_changed(struct keel_config_watch *w)
{
    bool changed = false;
    _Alignas(struct inotify_event) char buf[8192];
    for (;;) {
        ssize_t n = read(w->fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                changed = true;
            } else if (ev->wd == w->parent_wd) {
                if (ev->len && !strcmp(ev->name, w->base)) {
                    rearm(w);
                    changed = true;
                }
            } else if (ev->wd == w->wd && (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF))) {
                rearm(w); /* -1 until a new dir arrives by the parent's watch */
                changed = true;
            } else if (ev->wd == w->wd && ev->len && relevant_name(ev->name, ev->len)) {
                /* a created regular file is still being written: its IN_CLOSE_WRITE follows
                 * (reloading now would read it half-written); a new symlink is complete */
                if (!(ev->mask & IN_CREATE) || is_symlink(w, ev->name))
                    changed = true;
            }
        }
    }
    return changed;
}

void keel_config_watch_free(struct keel_config_watch *w)
{
    if (w == NULL)
        return;
    close(w->fd);
    free(w->dir);
    free(w->base);
    free(w);
}
