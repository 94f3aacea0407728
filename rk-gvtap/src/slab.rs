//! Slots for flows: O(1) insert and remove, stable indices for epoll tokens,
//! and a generation per slot so that a reused slot is told apart.

pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Where the next insert goes: (index, generation).
    pub fn vacant(&self) -> (u32, u32) {
        match self.free.last() {
            Some(&i) => (i, self.slots[i as usize].generation),
            None => (self.slots.len() as u32, 0),
        }
    }

    pub fn insert(&mut self, value: T) -> (u32, u32) {
        self.len += 1;
        if let Some(i) = self.free.pop() {
            let slot = &mut self.slots[i as usize];
            slot.value = Some(value);
            (i, slot.generation)
        } else {
            self.slots.push(Slot {
                generation: 0,
                value: Some(value),
            });
            ((self.slots.len() - 1) as u32, 0)
        }
    }

    pub fn get_mut(&mut self, index: u32, generation: u32) -> Option<&mut T> {
        let slot = self.slots.get_mut(index as usize)?;
        if slot.generation & 0x00ff_ffff != generation & 0x00ff_ffff {
            return None;
        }
        slot.value.as_mut()
    }

    /// The generation of slot `index` (of its current value, if any).
    pub fn generation(&self, index: u32) -> u32 {
        self.slots.get(index as usize).map_or(0, |s| s.generation)
    }

    pub fn get_index_mut(&mut self, index: u32) -> Option<&mut T> {
        self.slots.get_mut(index as usize)?.value.as_mut()
    }

    pub fn remove(&mut self, index: u32) -> Option<T> {
        let slot = self.slots.get_mut(index as usize)?;
        let v = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        self.len -= 1;
        Some(v)
    }

    /// Indices of the occupied slots.
    pub fn indices(&self) -> Vec<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.value.is_some())
            .map(|(i, _)| i as u32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_slot_gets_a_new_generation() {
        let mut s = Slab::default();
        let (i, g) = s.insert("a");
        assert_eq!(s.vacant(), (1, 0));
        assert_eq!(s.remove(i), Some("a"));
        assert_eq!(s.len(), 0);
        let (j, h) = s.insert("b");
        assert_eq!(i, j);
        assert_ne!(g, h);
        assert!(s.get_mut(i, g).is_none());
        assert_eq!(s.get_mut(j, h), Some(&mut "b"));
        assert_eq!(s.indices(), vec![j]);
    }
}
