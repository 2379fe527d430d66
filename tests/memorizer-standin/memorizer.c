// SPDX-License-Identifier: GPL-2.0
/*
 * A stand-in for Memorizer's debugfs interface, for kiln's tests: the control files of
 * /sys/kernel/debug/memorizer (the current names, or with old_names=1 the older ones)
 * and a kmap of kmap_mb MiB in Memorizer's format, generated on read. The first open of
 * kmap fails with EBUSY, as the real one can while Memorizer is busy.
 */
#include <linux/module.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/uaccess.h>

static int old_names;
module_param(old_names, int, 0444);
MODULE_PARM_DESC(old_names, "use the control file names of Memorizer before version 25");

static unsigned long kmap_mb = 1;
module_param(kmap_mb, ulong, 0444);
MODULE_PARM_DESC(kmap_mb, "size of the kmap in MiB");

static struct dentry *dir;
static u32 enabled, log_accesses, log_live, clear_dead, clear_printed, busy_once = 1;

/*
 * One object line and one access line, RECORD bytes together (the pid of the access is
 * zero-padded to fill it), so an offset in the kmap maps straight to a record:
 * "alloc_ip,pid,obj_va,size,alloc_index,free_index,free_ip,alloc_type,command,slab_cache,new_alloc_type"
 * "  access_ip,writes,reads,pid"
 */
#define RECORD 160

static void record(char *out, unsigned long i)
{
	char line[RECORD + 1];
	int n = snprintf(line, sizeof(line),
			 "ffffffff81%06lx,%lu,ffff8880%08lx,%lu,%lu,%lu,ffffffff82%06lx,SLAB,ls,kmalloc-64,SLAB\n",
			 i & 0xffffff, 1 + i % 9999, (i * 64) & 0xffffffff, 8 + i % 1000, i, i + 1,
			 i & 0xffffff);
	int m = snprintf(line + n, sizeof(line) - n, "  ffffffff83%06lx,%lu,%lu,", i & 0xffffff,
			 i % 10, i % 7);

	snprintf(line + n + m, sizeof(line) - n - m, "%0*lu\n", RECORD - n - m - 1, 1 + i % 9);
	memcpy(out, line, RECORD);
}

static int kmap_open(struct inode *inode, struct file *file)
{
	if (busy_once) {
		busy_once = 0;
		return -EBUSY;
	}
	return 0;
}

static ssize_t kmap_read(struct file *file, char __user *buf, size_t count, loff_t *ppos)
{
	/* Whole records only: about kmap_mb MiB. */
	loff_t total = ((loff_t)kmap_mb << 20) / RECORD * RECORD;
	char rec[RECORD];
	size_t done = 0;

	while (done < count && *ppos < total) {
		unsigned long i = *ppos / RECORD;
		size_t off = *ppos % RECORD;
		size_t n = min_t(size_t, RECORD - off, count - done);

		n = min_t(loff_t, n, total - *ppos);
		record(rec, i);
		if (copy_to_user(buf + done, rec + off, n))
			return done ? done : -EFAULT;
		done += n;
		*ppos += n;
		if (fatal_signal_pending(current))
			break;
	}
	return done;
}

static const struct file_operations kmap_fops = {
	.owner = THIS_MODULE,
	.open = kmap_open,
	.read = kmap_read,
	.llseek = default_llseek,
};

static int __init standin_init(void)
{
	dir = debugfs_create_dir("memorizer", NULL);
	debugfs_create_u32("memorizer_enabled", 0644, dir, &enabled);
	debugfs_create_u32(old_names ? "memorizer_log_access" : "log_accesses_enabled", 0644, dir,
			   &log_accesses);
	debugfs_create_u32(old_names ? "print_live_obj" : "log_live_enabled", 0644, dir, &log_live);
	debugfs_create_u32(old_names ? "clear_dead_objs" : "clear_dead_objects", 0644, dir,
			   &clear_dead);
	debugfs_create_u32("clear_printed_list", 0644, dir, &clear_printed);
	debugfs_create_file("kmap", 0444, dir, NULL, &kmap_fops);
	debugfs_create_u32("stats", 0444, dir, &enabled);
	return 0;
}

static void __exit standin_exit(void)
{
	debugfs_remove_recursive(dir);
}

module_init(standin_init);
module_exit(standin_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("A stand-in for Memorizer's debugfs interface, for kiln's tests");
