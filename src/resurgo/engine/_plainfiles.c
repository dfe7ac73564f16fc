/* The restore's hot path: checking and creating the plain files of a run of archive
 * entries (whole regular files without extended attributes, most files of a system),
 * each with a handful of system calls and no Python objects per file.
 *
 * It only takes the path everything agrees on: an entry that is not plain, a header,
 * path or manifest line that is not exactly as expected, a digest that differs, any
 * failing system call: it stops there, before the entry counts as made, and returns where
 * it stopped. writer.Applier then takes that entry through its general checks, which say
 * what is wrong or make it (a partial file left here is replaced there). So every message
 * and every refusal comes from the Python code; this file can only make restores faster.
 *
 * The entry layout is records.ENTRY_START: the frame (tag, header length, payload length)
 * and the fixed part of the header, then the path, the extent, the header's crc32, and
 * the payload (the data, then its digest). The manifest line is manifest.encode_entry's.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FRAME_SIZE 13
#define FIXED_SIZE 59
#define START_SIZE (FRAME_SIZE + FIXED_SIZE)
#define EXTENT_SIZE 16
#define CRC_SIZE 4
#define DIGEST_SIZE 32

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

/* zlib.crc32: headers are a few dozen bytes, a table is fast enough. */
static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static uint16_t u16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static int64_t i64(const unsigned char *p) { int64_t v; memcpy(&v, p, 8); return v; }

static struct timespec timespec_of(int64_t ns)
{
    struct timespec t;
    t.tv_sec = ns / 1000000000;
    t.tv_nsec = ns % 1000000000;
    if (t.tv_nsec < 0) {  /* os.utime's floor division */
        t.tv_nsec += 1000000000;
        t.tv_sec -= 1;
    }
    return t;
}

/* Whether the manifest line (without its newline) is the one of this plain file (a
 * subset of what writer.check_line passes): "f", path, mode (octal), uid, gid, size,
 * mtime, ctime, inode, rdev 0, the digest's hex, no xattr digest, the set, no target. */
static int line_matches(const char *line, Py_ssize_t len, const unsigned char *path,
                        uint32_t npath, uint32_t mode, uint32_t uid, uint32_t gid,
                        uint64_t size, int64_t mtime, const unsigned char *digest)
{
    static const char hex[] = "0123456789abcdef";
    char numbers[128];
    int n;
    if (len < 2 + (Py_ssize_t)npath || line[0] != 'f' || line[1] != '\t'
            || memcmp(line + 2, path, npath) != 0)
        return 0;
    n = snprintf(numbers, sizeof numbers, "\t%o\t%u\t%u\t%llu\t%lld\t", mode, uid, gid,
                 (unsigned long long)size, (long long)mtime);
    if (n <= 0 || (size_t)n >= sizeof numbers)
        return 0;
    const char *p = line + 2 + npath, *end = line + len;
    if (end - p < n || memcmp(p, numbers, (size_t)n) != 0)
        return 0;
    p += n;
    /* seven fields: ctime, inode, rdev, digest, xattr digest, set, target */
    const char *field[7];
    Py_ssize_t flen[7];
    for (int i = 0; i < 7; i++) {
        const char *tab = memchr(p, '\t', (size_t)(end - p));
        if ((tab == NULL) != (i == 6))
            return 0;
        field[i] = p;
        flen[i] = (tab ? tab : end) - p;
        p = tab ? tab + 1 : end;
    }
    if (flen[2] != 1 || field[2][0] != '0' || flen[3] != 2 * DIGEST_SIZE || flen[4] != 0
            || flen[6] != 0)
        return 0;
    for (int i = 0; i < DIGEST_SIZE; i++)
        if (field[3][2 * i] != hex[digest[i] >> 4] || field[3][2 * i + 1] != hex[digest[i] & 15])
            return 0;
    return 1;
}

/* Make one checked plain file: 0 when made, -1 when anything failed (nothing is then
 * counted; what was created is replaced by the general path). */
static int make_file(int dir_fd, const char *name, const unsigned char *data, uint64_t size,
                     uint32_t st_mode, uint32_t uid, uint32_t gid, int64_t atime,
                     int64_t mtime, uid_t owner_uid, gid_t owner_gid, mode_t umask_bits,
                     int setgid)
{
    /* As Applier.metadata: a new file has the creator's owner and the mode less the
     * umask; only what differs is set afterwards (a setgid directory gives its group).
     * Everything goes through the descriptor of the file this call created (O_EXCL,
     * O_NOFOLLOW), never its name: whatever another process puts at that name, nothing
     * here reaches it. A plain file has no capability; its setuid, setgid and sticky bits
     * come with the one fchmod, after its data and owner, as the last but the times. */
    mode_t mode = st_mode & 07777, new_mode = st_mode & 0777;
    int ok = 0;
    int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, new_mode);
    if (fd < 0)
        return -1;
    uint64_t done = 0;
    while (done < size) {
        size_t chunk = size - done > (1u << 30) ? (1u << 30) : (size_t)(size - done);
        ssize_t w = pwrite(fd, data + done, chunk, (off_t)done);
        if (w <= 0)
            goto out;
        done += (uint64_t)w;
    }
    if ((setgid || uid != owner_uid || gid != owner_gid) && fchown(fd, uid, gid) != 0)
        goto out;
    if ((setgid || (mode & 07000) || (new_mode & ~umask_bits) != mode) && fchmod(fd, mode) != 0)
        goto out;
    struct timespec times[2] = {timespec_of(atime), timespec_of(mtime)};
    if (futimens(fd, times) != 0)
        goto out;
    ok = 1;
out:
    if (close(fd) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

PyDoc_STRVAR(make_doc,
"make(records, pos, lines, index, dir_fd, prefix, owner_uid, owner_gid, umask, setgid, of)\n"
"\n"
"Check and create the plain files of ``records`` from offset ``pos`` on, the entry at\n"
"``pos`` with ``lines[index]``, the next with the next line..., in the directory\n"
"``dir_fd`` whose entries' paths start with ``prefix``; ``of`` gives a digest. Stops at\n"
"the first entry it does not make, or at the last line (lines ends with an empty one).\n"
"Returns (pos, index, files made, their data bytes).");

static PyObject *make(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer records, prefix;
    Py_ssize_t pos, index;
    PyObject *lines, *of;
    int dir_fd, setgid;
    unsigned int owner_uid, owner_gid, umask_bits;
    if (!PyArg_ParseTuple(args, "y*nO!niy*IIIpO", &records, &pos, &PyList_Type, &lines,
                          &index, &dir_fd, &prefix, &owner_uid, &owner_gid, &umask_bits,
                          &setgid, &of))
        return NULL;
    const unsigned char *buf = records.buf;
    const Py_ssize_t end = records.len, cut = prefix.len;
    long long files = 0, data_bytes = 0;
    PyObject *result = NULL;
    char name[NAME_MAX + 1];
    if (pos < 0 || pos > end || index < 0) {
        PyErr_SetString(PyExc_ValueError, "pos or index out of range");
        goto done;
    }
    for (; index < PyList_GET_SIZE(lines) - 1; index++) {
        if (end - pos < START_SIZE)
            break;
        const unsigned char *e = buf + pos, *h = e + FRAME_SIZE;
        uint32_t n = u32(e + 1);
        uint64_t payload = u64(e + 5);
        uint32_t st_mode = u32(h + 1), uid = u32(h + 5), gid = u32(h + 9);
        int64_t mtime = i64(h + 13), atime = i64(h + 21);
        uint64_t rdev = u64(h + 29), size = u64(h + 37);
        uint32_t npath = u32(h + 45), ntarget = u32(h + 49), nextents = u32(h + 55);
        uint16_t nxattrs = u16(h + 53);
        /* the same conditions as Applier.apply's general checks, and plain */
        /* (uid_t)-1 would mean "leave the owner" to fchown */
        if (e[0] != 'E' || h[0] != 'f' || !S_ISREG(st_mode) || ntarget || nxattrs || rdev
                || uid == UINT32_MAX || gid == UINT32_MAX
                || size > (uint64_t)1 << 40 || payload != size + DIGEST_SIZE
                || npath > PATH_MAX || nextents != (size ? 1u : 0u)
                || n != FIXED_SIZE + npath + (size ? EXTENT_SIZE : 0))
            break;
        Py_ssize_t data = pos + FRAME_SIZE + (Py_ssize_t)n + CRC_SIZE;
        if (data > end || end - data < (Py_ssize_t)payload)
            break;
        if (u32(h + n) != crc32_of(e, FRAME_SIZE + n))
            break;
        if (size && (u64(h + n - EXTENT_SIZE) != 0 || u64(h + n - 8) != size))
            break;
        /* the path: the block's directory, then one name (not ".", "..", no "/"), and
         * nothing that the manifest escapes or that would split its line (a control
         * character, a backslash) */
        const unsigned char *path = h + FIXED_SIZE;
        Py_ssize_t nlen = (Py_ssize_t)npath - cut;
        if (nlen < 1 || nlen > NAME_MAX || memcmp(path, prefix.buf, (size_t)cut) != 0)
            break;
        const unsigned char *nm = path + cut;
        int clean = !(nlen == 1 && nm[0] == '.') && !(nlen == 2 && nm[0] == '.' && nm[1] == '.')
                    && memchr(nm, '/', (size_t)nlen) == NULL;
        for (uint32_t i = 0; clean && i < npath; i++)
            if (path[i] < 0x20 || path[i] == 0x7f || path[i] == '\\')
                clean = 0;
        if (!clean)
            break;
        const unsigned char *content = buf + data, *digest = content + size;
        PyObject *line = PyList_GET_ITEM(lines, index);
        if (!PyBytes_Check(line)
                || !line_matches(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line), path, npath,
                                 st_mode, uid, gid, size, mtime, digest))
            break;
        PyObject *view = PyMemoryView_FromMemory((char *)content, (Py_ssize_t)size, PyBUF_READ);
        if (view == NULL)
            goto done;
        PyObject *actual = PyObject_CallOneArg(of, view);
        Py_DECREF(view);
        if (actual == NULL)
            goto done;
        int same = PyBytes_Check(actual) && PyBytes_GET_SIZE(actual) == DIGEST_SIZE
                   && memcmp(PyBytes_AS_STRING(actual), digest, DIGEST_SIZE) == 0;
        Py_DECREF(actual);
        if (!same)
            break;
        memcpy(name, nm, (size_t)nlen);
        name[nlen] = '\0';
        int failed;
        Py_BEGIN_ALLOW_THREADS
        failed = make_file(dir_fd, name, content, size, st_mode, uid, gid, atime, mtime,
                           owner_uid, owner_gid, umask_bits, setgid);
        Py_END_ALLOW_THREADS
        if (failed)
            break;
        files++;
        data_bytes += (long long)size;
        pos = data + (Py_ssize_t)payload;
    }
    result = Py_BuildValue("nnLL", pos, index, files, data_bytes);
done:
    PyBuffer_Release(&records);
    PyBuffer_Release(&prefix);
    return result;
}

PyDoc_STRVAR(ordered_doc,
"ordered(lines)\n"
"\n"
"-1 when the paths of the manifest lines (all but the last, empty, one) strictly increase\n"
"as bytes, none escaped; else the index of the first line that does not, or that is not\n"
"a line of a path: writer.check_order then says which and why.");

/* The order of a run's lines (writer.check_order): one directory's entries, whose paths
 * then sort as their names do. Each entry made is checked to be its line's path. */
static PyObject *ordered(PyObject *self, PyObject *lines)
{
    (void)self;
    if (!PyList_Check(lines)) {
        PyErr_SetString(PyExc_TypeError, "lines must be a list");
        return NULL;
    }
    const char *prev = NULL;
    Py_ssize_t prev_len = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lines) - 1; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        if (!PyBytes_Check(line))
            return PyLong_FromSsize_t(i);
        const char *p = PyBytes_AS_STRING(line);
        Py_ssize_t len = PyBytes_GET_SIZE(line);
        const char *tab = len > 2 && p[1] == '\t' ? memchr(p + 2, '\t', (size_t)len - 2) : NULL;
        if (tab == NULL)
            return PyLong_FromSsize_t(i);
        const char *path = p + 2;
        Py_ssize_t n = tab - path;
        if (memchr(path, '\\', (size_t)n) != NULL)
            return PyLong_FromSsize_t(i);
        if (prev != NULL) {
            int c = memcmp(prev, path, (size_t)(prev_len < n ? prev_len : n));
            if (c > 0 || (c == 0 && prev_len >= n))
                return PyLong_FromSsize_t(i);
        }
        prev = path;
        prev_len = n;
    }
    return PyLong_FromLong(-1);
}

static PyMethodDef methods[] = {
    {"make", make, METH_VARARGS, make_doc},
    {"ordered", ordered, METH_O, ordered_doc},
    {NULL, NULL, 0, NULL},
};

/* The sha256 of this file as it was built (setup.py gives it): resurgo.engine.extensions
 * takes a module built from another version of the source beside it for none. */
#ifndef RESURGO_SOURCE_SHA256
#define RESURGO_SOURCE_SHA256 ""
#endif

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_plainfiles",
    "The restore's plain-file hot path (see Applier.apply).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__plainfiles(void)
{
    crc_init();
    PyObject *m = PyModule_Create(&module);
    /* make's arguments and the entry layout it reads: writer.py takes a module whose API
     * differs (built from an older source) for none. */
    if (m != NULL && (PyModule_AddIntConstant(m, "API", 2) != 0
                      || PyModule_AddStringConstant(m, "SOURCE_SHA256",
                                                    RESURGO_SOURCE_SHA256) != 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
