/* The GEGL module: one shared object (sdgraph-gegl.so) registering sd:txt2img, sd:img2img and sd:inpaint. */
#include <gegl-plugin.h>

void gegl_op_sd_txt2img_register_type(GTypeModule* module);
void gegl_op_sd_img2img_register_type(GTypeModule* module);
void gegl_op_sd_inpaint_register_type(GTypeModule* module);

static const GeglModuleInfo sd_module_info = {GEGL_MODULE_ABI_VERSION};

G_MODULE_EXPORT const GeglModuleInfo* gegl_module_query(GTypeModule* module);
G_MODULE_EXPORT gboolean gegl_module_register(GTypeModule* module);

G_MODULE_EXPORT const GeglModuleInfo* gegl_module_query(GTypeModule* module) {
  (void)module;
  return &sd_module_info;
}

G_MODULE_EXPORT gboolean gegl_module_register(GTypeModule* module) {
  gegl_op_sd_txt2img_register_type(module);
  gegl_op_sd_img2img_register_type(module);
  gegl_op_sd_inpaint_register_type(module);
  return TRUE;
}
