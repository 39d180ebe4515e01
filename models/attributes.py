"""CelebA's 40 attribute names and the 8 attribute groups of the DMTL heads.

A leaf module (no imports from this project), so ``models`` and ``bench`` can both use it
without importing each other.
"""

from __future__ import annotations

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)

# Every CelebA attribute in exactly one group (Han et al.'s grouping, as used by the PSE paper).
ATTRIBUTE_GROUPS = {
    "holistic": ("Attractive", "Blurry", "Chubby", "Heavy_Makeup", "Male", "Oval_Face", "Pale_Skin", "Smiling", "Young"),
    "hair": (
        "Bald",
        "Bangs",
        "Black_Hair",
        "Blond_Hair",
        "Brown_Hair",
        "Gray_Hair",
        "Receding_Hairline",
        "Straight_Hair",
        "Wavy_Hair",
        "Wearing_Hat",
    ),
    "eyes": ("Arched_Eyebrows", "Bags_Under_Eyes", "Bushy_Eyebrows", "Eyeglasses", "Narrow_Eyes"),
    "nose": ("Big_Nose", "Pointy_Nose"),
    "cheeks_ears": ("High_Cheekbones", "Rosy_Cheeks", "Sideburns", "Wearing_Earrings"),
    "mouth": ("Big_Lips", "Mouth_Slightly_Open", "Mustache", "Wearing_Lipstick"),
    "chin": ("5_o_Clock_Shadow", "Double_Chin", "Goatee", "No_Beard"),
    "neck": ("Wearing_Necklace", "Wearing_Necktie"),
}
