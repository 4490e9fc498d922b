/* inotify on the config dir, for the proxy's event loop. */
#include "config/config.h"

#include "core/alloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

struct keel_config_watch {
    int fd;
    int wd;
};

struct keel_config_watch *keel_config_watch_new(const char *dir)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0)
        return NULL;
    int wd = inotify_add_watch(fd, dir,
                               IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF);
    if (wd < 0) {
        close(fd);
        return NULL;
    }
    struct keel_config_watch *w = keel_alloc(sizeof(*w));
    w->fd = fd;
    w->wd = wd;
    return w;
}

int keel_config_watch_fd(const struct keel_config_watch *w)
{
    return w->fd;
}

static bool yaml_name(const char *s, size_t len)
{
    size_t n = strnlen(s, len);
    if (n == 0 || s[0] == '.')
        return false;
    return (n > 5 && !memcmp(s + n - 5, ".yaml", 5)) || (n > 4 && !memcmp(s + n - 4, ".yml", 4));
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
            if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW))
                changed = true;
            else if (ev->len && yaml_name(ev->name, ev->len))
                changed = true;
            p += sizeof(*ev) + ev->len;
        }
    }
    return changed;
}

void keel_config_watch_free(struct keel_config_watch *w)
{
    if (w == NULL)
        return;
    close(w->fd);
    free(w);
}
